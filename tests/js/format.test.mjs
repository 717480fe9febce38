// Unit tests of how the dashboard writes numbers, durations and ids.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  formatAge,
  formatBytes,
  formatDuration,
  formatEta,
  formatPercent,
  humanizeType,
  shortId,
} from "../../opstream/static/js/format.js";

test("formatPercent clamps and rounds down, with a decimal for slow starts", () => {
  assert.equal(formatPercent(0), "0%");
  assert.equal(formatPercent(2.54), "2.5%");
  assert.equal(formatPercent(99.9), "99%");
  assert.equal(formatPercent(100), "100%");
  assert.equal(formatPercent(140), "100%");
  assert.equal(formatPercent(-3), "0%");
  assert.equal(formatPercent("nope"), "0%");
});

test("formatDuration reads like a person", () => {
  assert.equal(formatDuration(null), "");
  assert.equal(formatDuration(0.4), "< 1 s");
  assert.equal(formatDuration(12.4), "12 s");
  assert.equal(formatDuration(184), "3 min 4 s");
  assert.equal(formatDuration(180), "3 min");
  assert.equal(formatDuration(7500), "2 h 5 min");
  assert.equal(formatDuration(90000), "1 d 1 h");
  assert.equal(formatEta(12.4), "12 s left");
  assert.equal(formatEta(null), "");
});

test("formatAge is relative to now", () => {
  const now = Date.parse("2026-11-23T10:10:00.000Z");
  assert.equal(formatAge("2026-11-23T10:10:00.000Z", now), "just now");
  assert.equal(formatAge("2026-11-23T10:09:15.000Z", now), "45 s ago");
  assert.equal(formatAge("2026-11-23T10:06:55.000Z", now), "3 min ago");
  assert.equal(formatAge("not a time", now), "");
});

test("formatBytes, shortId and humanizeType", () => {
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(1536), "1.5 KB");
  assert.equal(formatBytes(50 * 1024 * 1024), "50 MB");
  assert.equal(shortId("op_01JDX3ABCDEFGHJKMNPQRSTVWX"), "op_01JD…RSTVWX");
  assert.equal(shortId("op_short"), "op_short");
  assert.equal(humanizeType("OperationSucceeded"), "Operation succeeded");
});

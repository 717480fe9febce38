// Unit tests of the params form's schema reading and of 422 problems mapped to fields.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  errorsByField,
  exampleParams,
  fieldsFromSchema,
  labelFor,
  paramsFromValues,
} from "../../opstream/static/js/schema-form.js";

const countdown = {
  type: "object",
  properties: {
    steps: { type: "integer", minimum: 1, maximum: 10000, description: "How many steps" },
    intervalMs: { type: "integer", minimum: 0, maximum: 60000, default: 100 },
    failAt: { type: "integer", minimum: 1 },
  },
  required: ["steps", "intervalMs"],
  additionalProperties: false,
};

const report = {
  type: "object",
  properties: {
    reportType: { type: "string", enum: ["yearly-sales"] },
    year: { type: "integer" },
  },
  required: ["reportType", "year"],
};

test("fieldsFromSchema reads flat object schemas", () => {
  const fields = fieldsFromSchema(countdown);
  assert.deepEqual(
    fields.map((f) => [f.name, f.type, f.required, f.minimum, f.maximum]),
    [
      ["steps", "integer", true, 1, 10000],
      ["intervalMs", "integer", true, 0, 60000],
      ["failAt", "integer", false, 1, null],
    ],
  );
  assert.equal(fields[0].description, "How many steps");
  assert.equal(fields[1].label, "Interval ms");
  const [reportType] = fieldsFromSchema(report);
  assert.deepEqual(reportType.choices, ["yearly-sales"]);
  assert.equal(reportType.defaultValue, "yearly-sales");
});

test("fieldsFromSchema gives up (raw JSON) on what a flat form cannot express", () => {
  assert.equal(fieldsFromSchema({ type: "object", properties: { tags: { type: "array" } } }), null);
  assert.equal(fieldsFromSchema({ type: "object", properties: { a: { type: "object" } } }), null);
  assert.equal(fieldsFromSchema({ oneOf: [] }), null);
  assert.equal(fieldsFromSchema({ type: "array" }), null);
  assert.deepEqual(fieldsFromSchema({ type: "object" }), []);
  assert.equal(fieldsFromSchema({ properties: { n: { type: ["integer", "null"] } } })[0].type, "integer");
});

test("paramsFromValues converts numbers, leaves out empty optionals, keeps bad input for the server", () => {
  const fields = fieldsFromSchema(countdown);
  assert.deepEqual(paramsFromValues(fields, { steps: "20", intervalMs: " 50 ", failAt: "" }), {
    steps: 20,
    intervalMs: 50,
  });
  assert.deepEqual(paramsFromValues(fields, { steps: "lots", intervalMs: "0" }), { steps: "lots", intervalMs: 0 });
  const flags = [{ name: "dryRun", type: "boolean" }];
  assert.deepEqual(paramsFromValues(flags, { dryRun: false }), { dryRun: false });
});

test("exampleParams fills what is required", () => {
  assert.deepEqual(exampleParams(countdown), { steps: 1, intervalMs: 100 });
  assert.deepEqual(exampleParams(report), { reportType: "yearly-sales", year: 0 });
});

test("errorsByField ties each message to its param by pointer or field", () => {
  const problem = {
    type: "about:blank",
    title: "Invalid params",
    status: 422,
    detail: "params do not match the kind's schema",
    errors: [
      { field: "params.year", pointer: "/params/year", message: "'x' is not of type 'integer'" },
      { field: "params.steps", message: "0 is less than the minimum of 1" },
      { pointer: "/params/a~1b", message: "escaped" },
      { field: "kind", pointer: "/kind", message: "unknown kind" },
      { message: "the body is not an object" },
    ],
  };
  assert.deepEqual(errorsByField(problem), {
    year: ["'x' is not of type 'integer'"],
    steps: ["0 is less than the minimum of 1"],
    "a/b": ["escaped"],
    kind: ["unknown kind"],
    "": ["the body is not an object"],
  });
  assert.deepEqual(errorsByField({ title: "Bad", detail: "no JSON" }), { "": ["no JSON"] });
});

test("labelFor makes names readable", () => {
  assert.equal(labelFor("reportType"), "Report type");
  assert.equal(labelFor("fail_at"), "Fail at");
});

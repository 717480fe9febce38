// The Durable Streams server conformance suite, run by vitest against the URL in
// CONFORMANCE_TEST_URL (tests/durable/bridge.py in front of opstream; see
// tests/e2e/test_durable_conformance.py, which names the read tests that must pass).
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

runConformanceTests({ baseUrl: process.env.CONFORMANCE_TEST_URL })

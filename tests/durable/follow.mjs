// Follow one opstream operation to its end with the official TypeScript Durable Streams
// client, as an application would: from offset -1, saving the offset after each batch and
// resuming from it whenever the server goes away (tests/e2e/test_durable_clients.py kills
// it). Prints one JSON line per batch ({"seqs": [...], "offset": ...}) and a last line
// {"done": true, "closed": bool, "resumes": n}.
//
//   node follow.mjs URL MODE TIMEOUT_SECONDS      (MODE: catchup | long-poll | sse)
import { stream } from "@durable-streams/client"

const [url, mode, timeoutSeconds = "120"] = process.argv.slice(2)
const deadline = Date.now() + Number(timeoutSeconds) * 1000
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const say = (line) => process.stdout.write(JSON.stringify(line) + "\n")

let offset = "-1"
let closed = false
let resumes = 0
while (!closed && Date.now() < deadline) {
  try {
    const res = await stream({
      url,
      offset,
      live: mode === "catchup" ? false : mode,
      json: true,
      // Fail fast to our own loop, which resumes from the saved offset.
      backoffOptions: { initialDelay: 100, maxDelay: 500, multiplier: 1.5, maxRetries: 3 },
    })
    await new Promise((resolve, reject) => {
      res.subscribeJson(async (batch) => {
        say({ seqs: batch.items.map((item) => item.seq), offset: batch.offset, closed: batch.streamClosed, upToDate: batch.upToDate })
        offset = batch.offset
        if (batch.streamClosed) closed = true
      })
      // The client resolves `closed` when it has queued its last response, before the
      // subscriber has been handed it: let the subscriber finish (microtasks) first.
      res.closed.then(() => sleep(20).then(resolve), reject)
    })
    if (!closed && mode === "catchup") await sleep(100) // catch-up only: poll again
  } catch (error) {
    resumes += 1
    process.stderr.write(`resuming from ${offset} after: ${error}\n`)
    await sleep(200)
  }
}
say({ done: true, closed, resumes, offset })
process.exit(closed ? 0 : 1)

// vitest configuration for the Durable Streams conformance suite: its own
// runner, dist/test-runner.js (it reads CONFORMANCE_TEST_URL), exactly as the
// package's CLI runs it -- no test code of the suite lives in this tree.
// Timeouts, retries and ordering are vitest's defaults, as under the CLI.
import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    root: import.meta.dirname,
    include: ['node_modules/@durable-streams/server-conformance-tests/dist/test-runner.js'],
    exclude: [],
    passWithNoTests: false,
    watch: false,
    coverage: { enabled: false },
  },
})

'use strict'
// The child processes a bench runner starts: every one is killed when the runner exits or is
// interrupted, so no peer or server outlives a run.

const live = new Set()

function killAll() {
  for (const c of live) {
    try {
      c.kill('SIGKILL')
    } catch {}
  }
}

/** Kills every live child on exit (then runs `cleanup`) and on SIGINT/SIGTERM (exit 130). */
function killChildrenOnExit(cleanup) {
  process.on('exit', () => {
    killAll()
    cleanup?.()
  })
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      killAll()
      process.exit(130)
    })
  }
}

/** The last `n` characters of a child's output, for a report. */
function tail(s, n = 1500) {
  s = s.trim()
  return s.length > n ? '…' + s.slice(-n) : s
}

module.exports = { live, killAll, killChildrenOnExit, tail }

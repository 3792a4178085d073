// The README's code is what new users copy: every ```ts and ```js block is type-checked as its
// own module, importing the package by name, with TypeScript 5 and 7 in strict nodenext mode.
// And a mistake in the options is reported against the options, not against the
// reconnecting-websocket overload.
import { spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import test from 'ava'

const repo = fileURLToPath(new URL('..', import.meta.url))
const compilers = { 'TypeScript 5': 'typescript', 'TypeScript 7': 'typescript-7' }

/** A directory inside the package, so that `import ... from 'redial-ws'` resolves to it by name. */
function project(name: string, files: Record<string, string>) {
  const dir = join(repo, 'node_modules', '.cache', name)
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  for (const [file, text] of Object.entries(files)) writeFileSync(join(dir, file), text)
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', strict: true, noEmit: true, types: ['node'], typeRoots: [join(repo, 'node_modules', '@types')], allowJs: true, checkJs: true, skipLibCheck: true },
      files: Object.keys(files),
    }),
  )
  return dir
}

function tsc(pkg: string, dir: string) {
  const run = spawnSync(process.execPath, [join(repo, 'node_modules', pkg, 'bin', 'tsc'), '-p', dir, '--pretty', 'false'], { encoding: 'utf8' })
  return { status: run.status, output: run.stdout + run.stderr }
}

const readme = readFileSync(join(repo, 'README.md'), 'utf8')
const blocks = [...readme.matchAll(/^ *```(ts|js)\n([\s\S]*?)^ *```$/gm)].map((m, i) => {
  const line = readme.slice(0, m.index).split('\n').length
  const ext = m[1] === 'ts' ? 'mts' : /\brequire\(/.test(m[2]) ? 'cjs' : 'mjs'
  return { file: `readme-line-${line}.${ext}`, code: m[2], line, index: i }
})

test('the README has a quick start program and more snippets to check', (t) => {
  t.true(blocks.length >= 5, `${blocks.length} code blocks`)
  t.regex(readme, /```sh\nnpm install redial-ws\n```/)
})

for (const [name, pkg] of Object.entries(compilers)) {
  test(`every README snippet type-checks (${name}, strict, nodenext)`, (t) => {
    const dir = project(`readme-${pkg}`, Object.fromEntries(blocks.map((b) => [b.file, b.code])))
    const { status, output } = tsc(pkg, dir)
    t.is(status, 0, output)
  })

  test(`a misspelt option is reported against ReconnectingWebSocketOptions (${name})`, (t) => {
    const dir = project(`overloads-${pkg}`, {
      'typo.mts': "import { ReconnectingWebSocket } from 'redial-ws'\nnew ReconnectingWebSocket('ws://127.0.0.1:1', { minDelya: 100 })\n",
      'jitter.mts': "import { ReconnectingWebSocket } from 'redial-ws'\nnew ReconnectingWebSocket('ws://127.0.0.1:1', { jitter: 'ful' })\n",
    })
    const { status, output } = tsc(pkg, dir)
    t.not(status, 0)
    // TypeScript 7 gives the last overload's error alone; 5 lists every overload's, the last last.
    const lastError = (file: string) => {
      const diagnostic = output.slice(output.indexOf(file)).split(/\n(?=\S)/)[0]
      return diagnostic.slice(diagnostic.lastIndexOf('gave the following error'))
    }
    t.regex(lastError('typo.mts'), /'minDelya' does not exist in type 'ReconnectingWebSocketOptions/)
    t.regex(lastError('jitter.mts'), /Type '"ful"' is not assignable to type '"(spread|full|equal|none)"( \| "(spread|full|equal|none)"){3}/)
    t.notRegex(lastError('typo.mts') + lastError('jitter.mts'), /Provider</, 'not the (url, protocols, options) overload')
  })
}

'use strict'
// A throwaway CA and a server certificate for 127.0.0.1/localhost (EC P-256, valid 2 days), made
// with the openssl CLI as the tests make theirs (__test__/certs.ts), for the `wss:` workloads.
// The files go in `dir` (run.js's temporary directory, removed at exit); the CA's key is deleted
// once the server certificate is signed.

const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

/** Returns { caFile, keyFile, certFile } in `dir`; throws if openssl is missing or fails. */
function makeCerts(dir) {
  const f = (name) => path.join(dir, name)
  const run = (...args) => {
    try {
      execFileSync('openssl', args, { stdio: 'pipe' })
    } catch (e) {
      if (e.code === 'ENOENT') throw new Error('the openssl CLI is not installed (it makes the throwaway certificate)')
      throw new Error(`openssl ${args[0]} failed: ${String(e.stderr || e.message).trim()}`)
    }
  }
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  run('req', '-x509', ...ec, '-days', '2', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-subj', '/CN=redial-ws bench CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
  run('req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=localhost')
  fs.writeFileSync(
    f('ext.cnf'),
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
    ].join('\n'),
  )
  run('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial',
    '-days', '2', '-out', f('server.pem'), '-extfile', f('ext.cnf'))
  for (const name of ['ca.key', 'ca.srl', 'server.csr', 'ext.cnf']) fs.rmSync(f(name), { force: true })
  return { caFile: f('ca.pem'), keyFile: f('server.key'), certFile: f('server.pem') }
}

module.exports = { makeCerts }

// A throwaway CA and a server certificate for 127.0.0.1/localhost, made at test time with openssl.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface TestCerts {
  ca: string
  key: string
  cert: string
  /** A second, unrelated CA. */
  otherCa: string
}

export function makeCerts(): TestCerts {
  const dir = mkdtempSync(join(tmpdir(), 'redial-certs-'))
  const f = (name: string) => join(dir, name)
  const run = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' })
  try {
    for (const ca of ['ca', 'other']) {
      run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
        '-keyout', f(`${ca}.key`), '-out', f(`${ca}.pem`), '-subj', `/CN=redial-ws test ${ca}`,
        '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
    }
    run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=localhost')
    writeFileSync(f('ext.cnf'), [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
    ].join('\n'))
    run('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial',
      '-days', '2', '-out', f('server.pem'), '-extfile', f('ext.cnf'))
    return {
      ca: readFileSync(f('ca.pem'), 'utf8'),
      key: readFileSync(f('server.key'), 'utf8'),
      cert: readFileSync(f('server.pem'), 'utf8'),
      otherCa: readFileSync(f('other.pem'), 'utf8'),
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

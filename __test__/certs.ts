// A throwaway CA and a server certificate for 127.0.0.1/localhost, made at test time with openssl;
// with `clients`, client certificates from the same CA too.
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
  /**
   * A self-signed certificate for localhost that is a CA's (`CA:TRUE`, as `openssl req -x509`
   * makes one by default), and its key: the certificate a developer makes for a local server.
   */
  selfSigned: { key: string; cert: string }
  /** The same with its common name alone (no subjectAltName): `openssl req -x509 -subj /CN=localhost`. */
  selfSignedCn: { key: string; cert: string }
  /** With `makeCerts({ clients: true })`: client certificates (CN `client-<name>`) and their keys. */
  clients?: Record<ClientKind, { cert: string; key: string }>
  /** The `ec` client's key, encrypted with `CLIENT_PASSPHRASE`. */
  encryptedKey?: string
  /**
   * The `ec` client's key and certificate with the CA, as PKCS#12 files (`CLIENT_PASSPHRASE`):
   * OpenSSL 3's default (PBES2, AES-256, HMAC-SHA256), PKCS#12's own 3DES with a SHA-1 MAC,
   * OpenSSL's `-legacy` (RC2), and with no password and no encryption.
   */
  pfx?: { modern: Buffer; tripleDes: Buffer; legacy: Buffer; unprotected: Buffer; manyRounds: Buffer }
  /**
   * With `makeCerts({ intermediate: true })`: an intermediate CA issued by `ca`, and a server
   * certificate for localhost/127.0.0.1 it issued, with its key.
   */
  intermediate?: { ca: string; cert: string; key: string }
}

/**
 * ec: P-256; rsa: 2048 bits; p521: ECDSA P-521 (rustls cannot sign with it); v1: P-256 in an X.509 v1
 * certificate (no extensions: `openssl x509 -req` without `-extfile`), which webpki cannot parse.
 */
export type ClientKind = 'ec' | 'rsa' | 'p521' | 'v1'
export const CLIENT_PASSPHRASE = 'correct horse battery staple'


export function makeCerts({ clients = false, intermediate = false } = {}): TestCerts {
  const dir = mkdtempSync(join(tmpdir(), 'redial-certs-'))
  const f = (name: string) => join(dir, name)
  const run = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' })
  try {
    for (const ca of ['ca', 'other']) {
      run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
        '-keyout', f(`${ca}.key`), '-out', f(`${ca}.pem`), '-subj', `/CN=redial-ws test ${ca}`,
        '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
    }
    run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-keyout', f('self.key'), '-out', f('self.pem'), '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-addext', 'basicConstraints=critical,CA:TRUE')
    run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-keyout', f('cn.key'), '-out', f('cn.pem'), '-subj', '/CN=localhost', '-addext', 'basicConstraints=critical,CA:TRUE')
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
    let chained: TestCerts['intermediate']
    if (intermediate) {
      writeFileSync(f('int.cnf'), ['basicConstraints=critical,CA:TRUE,pathlen:0', 'keyUsage=critical,keyCertSign,cRLSign'].join('\n'))
      run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', f('int.key'), '-out', f('int.csr'), '-subj', '/CN=redial-ws test intermediate')
      run('x509', '-req', '-in', f('int.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial',
        '-days', '2', '-out', f('int.pem'), '-extfile', f('int.cnf'))
      run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', f('leaf.key'), '-out', f('leaf.csr'), '-subj', '/CN=localhost')
      run('x509', '-req', '-in', f('leaf.csr'), '-CA', f('int.pem'), '-CAkey', f('int.key'), '-CAcreateserial',
        '-days', '2', '-out', f('leaf.pem'), '-extfile', f('ext.cnf'))
      chained = { ca: readFileSync(f('int.pem'), 'utf8'), cert: readFileSync(f('leaf.pem'), 'utf8'), key: readFileSync(f('leaf.key'), 'utf8') }
    }
    const made: Partial<Record<ClientKind, { cert: string; key: string }>> = {}
    let encryptedKey: string | undefined
    let pfx: TestCerts['pfx']
    if (clients) {
      writeFileSync(f('client.cnf'), ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature', 'extendedKeyUsage=clientAuth'].join('\n'))
      const newKey: Record<ClientKind, string[]> = {
        ec: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'],
        rsa: ['-newkey', 'rsa:2048'],
        p521: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:secp521r1'],
        v1: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'],
      }
      for (const kind of Object.keys(newKey) as ClientKind[]) {
        run('req', ...newKey[kind], '-nodes', '-keyout', f(`${kind}.key`), '-out', f(`${kind}.csr`), '-subj', `/CN=client-${kind}`)
        run('x509', '-req', '-in', f(`${kind}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial',
          '-days', '2', '-out', f(`${kind}.pem`), ...(kind === 'v1' ? [] : ['-extfile', f('client.cnf')]))
        made[kind] = { cert: readFileSync(f(`${kind}.pem`), 'utf8'), key: readFileSync(f(`${kind}.key`), 'utf8') }
      }
      run('pkey', '-in', f('ec.key'), '-aes256', '-passout', `pass:${CLIENT_PASSPHRASE}`, '-out', f('ec-encrypted.key'))
      encryptedKey = readFileSync(f('ec-encrypted.key'), 'utf8')
      const pkcs12 = (name: string, ...args: string[]) => {
        run('pkcs12', '-export', '-inkey', f('ec.key'), '-in', f('ec.pem'), '-out', f(name), ...args)
        return readFileSync(f(name))
      }
      const password = `pass:${CLIENT_PASSPHRASE}`
      pfx = {
        modern: pkcs12('modern.p12', '-certfile', f('ca.pem'), '-passout', password),
        tripleDes: pkcs12('des.p12', '-certfile', f('ca.pem'), '-passout', password, '-certpbe', 'PBE-SHA1-3DES', '-keypbe', 'PBE-SHA1-3DES', '-macalg', 'sha1'),
        legacy: pkcs12('legacy.p12', '-passout', password, '-legacy'),
        unprotected: pkcs12('plain.p12', '-passout', 'pass:', '-nomac', '-keypbe', 'NONE', '-certpbe', 'NONE'),
        // A MAC of 2,100,000 rounds of PKCS#12's key derivation: more than the file budget.
        manyRounds: pkcs12('rounds.p12', '-passout', password, '-keypbe', 'NONE', '-certpbe', 'NONE', '-iter', '2100000'),
      }
    }
    return {
      clients: clients ? (made as Record<ClientKind, { cert: string; key: string }>) : undefined,
      encryptedKey,
      pfx,
      intermediate: chained,
      ca: readFileSync(f('ca.pem'), 'utf8'),
      key: readFileSync(f('server.key'), 'utf8'),
      cert: readFileSync(f('server.pem'), 'utf8'),
      otherCa: readFileSync(f('other.pem'), 'utf8'),
      selfSigned: { key: readFileSync(f('self.key'), 'utf8'), cert: readFileSync(f('self.pem'), 'utf8') },
      selfSignedCn: { key: readFileSync(f('cn.key'), 'utf8'), cert: readFileSync(f('cn.pem'), 'utf8') },
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

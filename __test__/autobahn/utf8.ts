// Incremental, strict UTF-8 validation (RFC 3629: no overlongs, no surrogates, nothing past
// U+10FFFF), as the fuzzing server uses it on the text messages a client sends, and as the 6.x
// case generator uses it to decide which prefixes of a valid string are themselves valid.

export class Utf8Validator {
  #need = 0
  #lo = 0x80
  #hi = 0xbf
  #failed = false

  reset(): void {
    this.#need = 0
    this.#lo = 0x80
    this.#hi = 0xbf
    this.#failed = false
  }

  /** Feeds more octets. `valid`: no invalid octet so far; `complete`: the input ends on a code point boundary. */
  validate(data: Uint8Array): { valid: boolean; complete: boolean } {
    if (!this.#failed) {
      for (let i = 0; i < data.length; i++) {
        const b = data[i]
        if (this.#need === 0) {
          if (b < 0x80) continue
          if (b >= 0xc2 && b <= 0xdf) this.#start(1, 0x80, 0xbf)
          else if (b === 0xe0) this.#start(2, 0xa0, 0xbf)
          else if ((b >= 0xe1 && b <= 0xec) || b === 0xee || b === 0xef) this.#start(2, 0x80, 0xbf)
          else if (b === 0xed) this.#start(2, 0x80, 0x9f)
          else if (b === 0xf0) this.#start(3, 0x90, 0xbf)
          else if (b >= 0xf1 && b <= 0xf3) this.#start(3, 0x80, 0xbf)
          else if (b === 0xf4) this.#start(3, 0x80, 0x8f)
          else {
            this.#failed = true
            break
          }
        } else {
          if (b < this.#lo || b > this.#hi) {
            this.#failed = true
            break
          }
          this.#lo = 0x80
          this.#hi = 0xbf
          this.#need--
        }
      }
    }
    return { valid: !this.#failed, complete: !this.#failed && this.#need === 0 }
  }

  #start(need: number, lo: number, hi: number): void {
    this.#need = need
    this.#lo = lo
    this.#hi = hi
  }
}

/** Whether `data` is, as a whole, valid UTF-8 ending on a code point boundary. */
export function isValidUtf8(data: Uint8Array): boolean {
  const v = new Utf8Validator()
  const r = v.validate(data)
  return r.valid && r.complete
}

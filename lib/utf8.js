'use strict'
// The one strict UTF-8 decoder of lib/ (close reasons, text pieces, Blobs sent as text, a
// proxy's answer). Node's own, not the global: a test environment (Jest's jsdom) may have none.
// ignoreBOM: a U+FEFF at the start is part of the text.

const { TextDecoder } = require('node:util')

/** Decodes `bytes` as UTF-8; throws a TypeError where they are not. */
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

module.exports = { utf8 }

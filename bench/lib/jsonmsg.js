'use strict'
// JSON-like text messages of exactly `size` bytes (ASCII) for the permessage-deflate workloads:
// one template (a market-data update), every number and id drawn from a PRNG seeded by the
// message's index, so consecutive messages share their structure but not their values, as a real
// feed's do. Deterministic: the server and the peer build the same message i independently.

/** mulberry32: a small, fast, deterministic PRNG. */
function prng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const SYMBOLS = ['BTC-USD', 'ETH-USD', 'SOL-USD', 'ADA-EUR', 'XRP-USD', 'DOT-EUR', 'LTC-USD', 'AVAX-USD']
const VENUES = ['alpha', 'bravo', 'charlie', 'delta']
const SIDES = ['buy', 'sell']
const TIERS = ['retail', 'pro', 'market-maker', 'institutional']

/** Message number `i` (0-based), exactly `size` bytes long (size ≥ 512). */
function jsonMessage(i, size = 1024) {
  const r = prng(i * 2654435761 + 12345)
  const int = (n) => Math.floor(r() * n)
  const px = (base, spread, digits) => (base + (r() - 0.5) * spread).toFixed(digits)
  const symbol = SYMBOLS[int(SYMBOLS.length)]
  const mid = 1000 + int(60000)
  const head =
    `{"type":"book_update","seq":${1000000 + i},"id":"upd-${(i * 7919).toString(16).padStart(8, '0')}-${int(65536)
      .toString(16)
      .padStart(4, '0')}",` +
    `"ts":${1700000000000 + i * 37 + int(30)},"symbol":"${symbol}","venue":"${VENUES[int(VENUES.length)]}",` +
    `"last":{"price":${px(mid, 20, 2)},"qty":${(r() * 5).toFixed(4)},"side":"${SIDES[int(2)]}"},` +
    `"account":{"id":${10000 + int(90000)},"tier":"${TIERS[int(TIERS.length)]}","open_orders":${int(50)}},`
  const bids = []
  const asks = []
  // Levels until the next pair would not fit: `"bids":[…],"asks":[…],"pad":""}` closes it.
  let len = head.length + '"bids":[],"asks":[],"pad":""}'.length
  for (let level = 0; ; level++) {
    const bid = `[${px(mid - level * 0.5, 0.4, 2)},${(r() * 10).toFixed(4)},${1 + int(20)}]`
    const ask = `[${px(mid + level * 0.5, 0.4, 2)},${(r() * 10).toFixed(4)},${1 + int(20)}]`
    const add = bid.length + ask.length + (level ? 2 : 0)
    if (len + add > size) break
    len += add
    bids.push(bid)
    asks.push(ask)
  }
  const body = `${head}"bids":[${bids.join(',')}],"asks":[${asks.join(',')}],"pad":"`
  // Exactly `size` bytes: fill the last field with a short, message-specific run.
  const fill = size - body.length - 2
  if (fill < 0) throw new Error(`jsonMessage: ${size} bytes is too short`)
  let pad = ''
  while (pad.length < fill) pad += int(36).toString(36)
  return `${body}${pad.slice(0, fill)}"}`
}

module.exports = { jsonMessage }

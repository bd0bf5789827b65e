package authz

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"
)

// crockford is the ULID alphabet: Crockford's base32, which sorts like the
// numbers it encodes and has no I, L, O or U to misread when an operator
// quotes an ID back.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// idGenerator makes decision IDs in the ULID layout: 48 bits of Unix
// milliseconds then 80 random bits, 26 characters. IDs sort by time, and
// within one millisecond they are monotonic (the random part is incremented),
// so an operator can sort audit lines by ID. The random part comes from
// crypto/rand once per millisecond, which keeps IDs unguessable across
// milliseconds without paying for a read on every cached decision.
type idGenerator struct {
	mu     sync.Mutex
	lastMS uint64
	hi     uint16 // top 16 of the 80 random bits
	lo     uint64 // low 64 of the 80 random bits
}

func (g *idGenerator) next(now time.Time) string {
	ms := uint64(now.UnixMilli())
	g.mu.Lock()
	if ms <= g.lastMS {
		// Same millisecond, or the clock stepped back: stay monotonic.
		ms = g.lastMS
		g.lo++
		if g.lo == 0 {
			g.hi++
			if g.hi == 0 {
				ms++ // 80 bits exhausted within one millisecond: borrow the next one
			}
		}
	} else {
		var b [10]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
		g.hi = binary.BigEndian.Uint16(b[:2])
		g.lo = binary.BigEndian.Uint64(b[2:])
	}
	g.lastMS = ms
	hi, lo := g.hi, g.lo
	g.mu.Unlock()
	return encodeULID(ms, hi, lo)
}

// encodeULID writes the 128-bit value ms(48) | hi(16) | lo(64) as 26 base32
// digits, most significant first (the first digit carries only 3 bits).
func encodeULID(ms uint64, hi uint16, lo uint64) string {
	// Work on the 128 bits as two words: top = ms<<16 | hi, bottom = lo.
	top := ms<<16 | uint64(hi)
	var out [26]byte
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		// Shift the 128-bit value right by 5.
		lo = lo>>5 | top<<59
		top >>= 5
	}
	return string(out[:])
}

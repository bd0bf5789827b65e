package h2meta

import (
	"hash/maphash"
	"io"

	"golang.org/x/net/http2/hpack"
)

// Encoder is an HPACK encoder (RFC 7541) producing what x/net's
// hpack.Encoder produces, for the same calls, with a cheaper search. One
// difference: a sensitive field is always a never-indexed literal, where
// x/net sends the index of an entry with the same name and value.
//
// x/net finds a field in its tables with up to four map lookups keyed by
// name and by name+value pairs: the largest single cost of the edge's
// request path after the system calls (6-7% of its CPU under load).
// Here the static table is one map lookup by name, and the dynamic table
// is indexed by two small set-associative caches of hashes (names, and
// name+value pairs) pointing at entries by insertion number. A cache slot
// can only be wrong by being stale or lost to a full bucket: every hit is
// checked against the live entry's strings, and while a lost entry is in
// the table a miss is checked by scanning it, so the output stays x/net's.
type Encoder struct {
	w   io.Writer
	buf []byte

	// The dynamic table: entries in insertion order in a ring; the entry
	// inserted as number n (counting from 1) lives at ring[n%len(ring)]
	// while n > inserted-count.
	ring     []dynEntry
	inserted uint64
	count    uint64
	size     uint32 // RFC 7541 §4.1 size of the live entries
	maxSize  uint32 // the table's current capacity
	update   bool   // a size update is due at the next field
	// dropped is the newest entry a full cache bucket gave up while it
	// was live: while it still is, a cache miss is checked by a scan.
	dropped uint64

	names [cacheSlots]cacheSlot
	pairs [cacheSlots]cacheSlot
}

type dynEntry struct {
	name, value string
}

// cacheSlot points at a dynamic entry by its hash: both cut to 32 bits,
// to fit a bucket in a cache line. A slot is only a hint: what it points
// at is checked to be live and to hold the field's strings.
type cacheSlot struct {
	hash uint32 // slotHash; 0: empty
	n    uint32 // the entry's insertion number, modulo 2^32
}

// slotHash is what a slot keeps of a hash: never 0, the empty slot's.
func slotHash(h uint64) uint32 { return uint32(h) | 1 }

const (
	// cacheSlots is a power of two, twice the most entries a 4096-byte
	// table can hold (4096/32), in buckets of bucketSlots (64 bytes): an
	// entry is lost to a cache only when more live entries than that hash
	// to one bucket (with real headers, 40-60 entries in 32 buckets,
	// rare), and then the oldest one; until it leaves the table, misses
	// are checked by scanning it (see dropped). 2 KiB a cache, per
	// connection.
	cacheSlots  = 256
	bucketSlots = 8
	// defaultTableSize is both peers' initial dynamic table size.
	defaultTableSize = 4096
	// entryOverhead is what RFC 7541 §4.1 adds to an entry's size.
	entryOverhead = 32
)

// NewEncoder returns an encoder writing each field's bytes to w in one
// Write, with the default 4096-byte dynamic table.
func NewEncoder(w io.Writer) *Encoder {
	return &Encoder{
		w:       w,
		ring:    make([]dynEntry, defaultTableSize/entryOverhead),
		maxSize: defaultTableSize,
	}
}

// SetMaxDynamicTableSizeLimit records the peer's SETTINGS_HEADER_TABLE_SIZE.
// A limit below the table's size shrinks the table, and the next field
// written is preceded by a Dynamic Table Size Update; a larger one leaves
// the table at its size (as x/net's encoder does).
func (e *Encoder) SetMaxDynamicTableSizeLimit(v uint32) {
	if e.maxSize > v {
		e.maxSize = v
		e.update = true
		e.evict(0)
	}
}

// WriteField encodes f and writes it to the encoder's writer in one Write.
func (e *Encoder) WriteField(f hpack.HeaderField) error {
	b := e.buf[:0]
	if e.update {
		e.update = false
		b = appendInt(b, 0x20, 5, uint64(e.maxSize))
	}
	b = e.appendField(b, f.Name, f.Value, f.Sensitive)
	e.buf = b
	n, err := e.w.Write(b)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	return err
}

func (e *Encoder) appendField(b []byte, name, value string, sensitive bool) []byte {
	hn := maphash.String(hashSeed, name)
	st, inStatic := staticLookup(hn, name)
	if inStatic && !sensitive {
		for i, v := range st.values {
			if v == value {
				return appendInt(b, 0x80, 7, uint64(st.first)+uint64(i))
			}
		}
	}
	hp := pairHash(hn, maphash.String(hashSeed, value))
	if !sensitive {
		if n := e.find(&e.pairs, hp, name, value, true); n != 0 {
			return appendInt(b, 0x80, 7, e.index(n))
		}
	}
	var nameIndex uint64
	if inStatic {
		nameIndex = uint64(st.first) + uint64(len(st.values)) - 1 // x/net names the last
	} else if n := e.find(&e.names, hn, name, "", false); n != 0 {
		nameIndex = e.index(n)
	}
	if e.dropped != 0 && e.dropped > e.inserted-e.count {
		// A cache lost a live entry: the table itself has the answer.
		if n := e.scan(name, value, true); n != 0 && !sensitive {
			return appendInt(b, 0x80, 7, e.index(n))
		}
		if n := e.scan(name, "", false); n != 0 && !inStatic {
			nameIndex = e.index(n)
		}
	}
	size := uint32(len(name)) + uint32(len(value)) + entryOverhead
	indexing := !sensitive && uint64(len(name))+uint64(len(value))+entryOverhead <= uint64(e.maxSize)
	var typ byte
	var prefix uint8
	switch {
	case sensitive:
		typ, prefix = 0x10, 4 // never indexed
	case indexing:
		typ, prefix = 0x40, 6 // incremental indexing
	default:
		typ, prefix = 0x00, 4 // without indexing
	}
	if nameIndex != 0 {
		b = appendInt(b, typ, prefix, nameIndex)
	} else {
		b = append(b, typ)
		b = appendString(b, name)
	}
	b = appendString(b, value)
	if indexing {
		e.add(name, value, size, hn, hp)
	}
	return b
}

// find returns the insertion number of the live entry that the cache
// bucket for h points at with matching strings (the value only when
// withValue), or 0.
func (e *Encoder) find(cache *[cacheSlots]cacheSlot, h uint64, name, value string, withValue bool) uint64 {
	h32 := slotHash(h)
	for _, s := range bucketOf(cache, h) {
		if s.hash != h32 {
			continue
		}
		n, ok := e.live(s.n)
		if !ok {
			continue
		}
		ent := &e.ring[n%uint64(len(e.ring))]
		if ent.name == name && (!withValue || ent.value == value) {
			return n
		}
	}
	return 0
}

// scan finds the newest live entry with name (and value, if withValue)
// by reading the table: the answer the caches give when they have not
// lost it.
func (e *Encoder) scan(name, value string, withValue bool) uint64 {
	for n := e.inserted; n > e.inserted-e.count; n-- {
		ent := &e.ring[n%uint64(len(e.ring))]
		if ent.name == name && (!withValue || ent.value == value) {
			return n
		}
	}
	return 0
}

// same reports whether entries a and b have the same name (and value, if
// withValue).
func (e *Encoder) same(a, b uint64, withValue bool) bool {
	x, y := &e.ring[a%uint64(len(e.ring))], &e.ring[b%uint64(len(e.ring))]
	return x.name == y.name && (!withValue || x.value == y.value)
}

// remember points the cache bucket for h at entry n, in the slot that
// held h before, else a free or stale one, else the oldest entry's (which
// dropped then records).
func (e *Encoder) remember(cache *[cacheSlots]cacheSlot, h, n uint64, withValue bool) {
	bucket := bucketOf(cache, h)
	h32 := slotHash(h)
	for i, s := range bucket {
		if s.hash == h32 {
			// The same name (or pair) again, now at its newest entry; or,
			// once in four billion, another one whose hash collides.
			if old, live := e.live(s.n); live && !e.same(old, n, withValue) {
				e.dropped = max(e.dropped, old)
			}
			bucket[i].n = uint32(n)
			return
		}
	}
	victim, oldest, full := 0, uint64(0), true
	for i, s := range bucket {
		sn, live := e.live(s.n)
		if s.hash == 0 || !live {
			victim, full = i, false
			break
		}
		if i == 0 || sn < oldest {
			victim, oldest = i, sn
		}
	}
	if full {
		e.dropped = max(e.dropped, oldest)
	}
	bucket[victim] = cacheSlot{h32, uint32(n)}
}

func bucketOf(cache *[cacheSlots]cacheSlot, h uint64) []cacheSlot {
	// The bucket from the hash's high bits: the low ones are the slot's
	// hash, compared first.
	i := (h >> 32) & (cacheSlots - 1) &^ (bucketSlots - 1)
	return cache[i : i+bucketSlots]
}

// live returns the insertion number whose low 32 bits are n32, if that
// entry is in the table.
func (e *Encoder) live(n32 uint32) (uint64, bool) {
	back := uint32(e.inserted) - n32 // how many insertions ago, modulo 2^32
	if uint64(back) >= e.count {
		return 0, false
	}
	return e.inserted - uint64(back), true
}

// index is the HPACK index of the entry inserted as number n: the newest
// entry follows the static table's 61.
func (e *Encoder) index(n uint64) uint64 { return uint64(len(staticTable)) + e.inserted - n + 1 }

// add inserts an entry, evicting the oldest ones to make room.
func (e *Encoder) add(name, value string, size uint32, hn, hp uint64) {
	// The table never grows past its initial 4096 bytes, and an entry
	// takes at least 32: after evicting, the ring has a free slot.
	e.evict(size)
	e.inserted++
	e.count++
	e.size += size
	e.ring[e.inserted%uint64(len(e.ring))] = dynEntry{name, value}
	e.remember(&e.names, hn, e.inserted, false)
	e.remember(&e.pairs, hp, e.inserted, true)
}

// evict drops the oldest entries until room more bytes fit in maxSize.
func (e *Encoder) evict(room uint32) {
	for e.count > 0 && uint64(e.size)+uint64(room) > uint64(e.maxSize) {
		oldest := &e.ring[(e.inserted-e.count+1)%uint64(len(e.ring))]
		e.size -= uint32(len(oldest.name)) + uint32(len(oldest.value)) + entryOverhead
		*oldest = dynEntry{} // the strings are the caller's: let them go
		e.count--
	}
}

func pairHash(hn, hv uint64) uint64 {
	// A name's hash and its value's, mixed so that swapping them, or equal
	// halves, do not collide.
	return hn ^ (hv*0x9e3779b97f4a7c15 + 0x632be59bd9b4e019)
}

// appendInt appends i as an HPACK integer with an n-bit prefix, the
// first byte's other bits being first (RFC 7541 §5.1).
func appendInt(b []byte, first byte, n uint8, i uint64) []byte {
	max := uint64(1)<<n - 1
	if i < max {
		return append(b, first|byte(i))
	}
	b = append(b, first|byte(max))
	for i -= max; i >= 0x80; i >>= 7 {
		b = append(b, byte(i)|0x80)
	}
	return append(b, byte(i))
}

// appendString appends s as an HPACK string literal, Huffman-coded when
// that is strictly shorter (RFC 7541 §5.2).
func appendString(b []byte, s string) []byte {
	if hl := hpack.HuffmanEncodeLength(s); hl < uint64(len(s)) {
		b = appendInt(b, 0x80, 7, hl)
		return hpack.AppendHuffmanString(b, s)
	}
	b = appendInt(b, 0, 7, uint64(len(s)))
	return append(b, s...)
}

// staticName is a name of the static table: its first index, and the
// values of the entries from there on that have that name.
type staticName struct {
	first  uint8
	values []string
}

// staticTable is RFC 7541 Appendix A.
var staticTable = [...]dynEntry{
	{":authority", ""}, {":method", "GET"}, {":method", "POST"}, {":path", "/"},
	{":path", "/index.html"}, {":scheme", "http"}, {":scheme", "https"},
	{":status", "200"}, {":status", "204"}, {":status", "206"}, {":status", "304"},
	{":status", "400"}, {":status", "404"}, {":status", "500"},
	{"accept-charset", ""}, {"accept-encoding", "gzip, deflate"},
	{"accept-language", ""}, {"accept-ranges", ""}, {"accept", ""},
	{"access-control-allow-origin", ""}, {"age", ""}, {"allow", ""},
	{"authorization", ""}, {"cache-control", ""}, {"content-disposition", ""},
	{"content-encoding", ""}, {"content-language", ""}, {"content-length", ""},
	{"content-location", ""}, {"content-range", ""}, {"content-type", ""},
	{"cookie", ""}, {"date", ""}, {"etag", ""}, {"expect", ""}, {"expires", ""},
	{"from", ""}, {"host", ""}, {"if-match", ""}, {"if-modified-since", ""},
	{"if-none-match", ""}, {"if-range", ""}, {"if-unmodified-since", ""},
	{"last-modified", ""}, {"link", ""}, {"location", ""}, {"max-forwards", ""},
	{"proxy-authenticate", ""}, {"proxy-authorization", ""}, {"range", ""},
	{"referer", ""}, {"refresh", ""}, {"retry-after", ""}, {"server", ""},
	{"set-cookie", ""}, {"strict-transport-security", ""},
	{"transfer-encoding", ""}, {"user-agent", ""}, {"vary", ""}, {"via", ""},
	{"www-authenticate", ""},
}

// hashSeed seeds the hashes of names and values, in the static index and
// every encoder's caches. Per process: the outside cannot aim collisions.
var hashSeed = maphash.MakeSeed()

// staticIndex finds staticTable's names by hash (open addressing, a
// quarter full): one hash and usually one string comparison, where a Go
// map lookup hashed the name a second time.
var staticIndex = func() (idx [256]struct {
	hash uint64
	sn   staticName
	name string
}) {
	for i, ent := range staticTable {
		h := maphash.String(hashSeed, ent.name)
		j := h % uint64(len(idx))
		for idx[j].name != "" && idx[j].name != ent.name {
			j = (j + 1) % uint64(len(idx))
		}
		if idx[j].name == "" {
			idx[j].hash, idx[j].name, idx[j].sn.first = h, ent.name, uint8(i+1)
		}
		idx[j].sn.values = append(idx[j].sn.values, ent.value)
	}
	return idx
}()

// staticLookup returns the static table's entries named name, whose hash
// is h.
func staticLookup(h uint64, name string) (staticName, bool) {
	for j := h % uint64(len(staticIndex)); staticIndex[j].name != ""; j = (j + 1) % uint64(len(staticIndex)) {
		if staticIndex[j].hash == h && staticIndex[j].name == name {
			return staticIndex[j].sn, true
		}
	}
	return staticName{}, false
}

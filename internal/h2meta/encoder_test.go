package h2meta

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// encodeBoth encodes one header block with our encoder and x/net's.
func encodeBoth(e *Encoder, theirs *hpack.Encoder, ob, tb *bytes.Buffer, fields []hpack.HeaderField) {
	ob.Reset()
	tb.Reset()
	for _, f := range fields {
		_ = e.WriteField(f)
		_ = theirs.WriteField(f)
	}
}

// TestEncoderMatchesXNet: for the blocks an agent sends (a few fields,
// mostly repeated), the bytes are x/net's, field for field: the same
// indexes, literals, Huffman choices and evictions.
func TestEncoderMatchesXNet(t *testing.T) {
	var ob, tb bytes.Buffer
	e := NewEncoder(&ob)
	theirs := hpack.NewEncoder(&tb)
	req := func(path, xff string) []hpack.HeaderField {
		return []hpack.HeaderField{
			{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "https"},
			{Name: ":authority", Value: "users"}, {Name: ":path", Value: path},
			{Name: "user-agent", Value: "h2load nghttp2/1.64.0"},
			{Name: "x-forwarded-for", Value: xff},
			{Name: "forwarded", Value: "for=\"" + xff + ":40112\";proto=https"},
			{Name: "accept-encoding", Value: "gzip, deflate"},
			{Name: "authorization", Value: "Bearer secret", Sensitive: true},
			{Name: "content-type", Value: ""}, {Name: "x-request-id", Value: strings.Repeat("r", 100)},
		}
	}
	resp := []hpack.HeaderField{
		{Name: ":status", Value: "200"}, {Name: "content-type", Value: "text/plain"},
		{Name: "content-length", Value: "3"}, {Name: "server", Value: "nginx"},
		{Name: "date", Value: "Sun, 06 Dec 2026 03:40:00 GMT"},
	}
	for i := range 200 {
		var fields []hpack.HeaderField
		switch i % 3 {
		case 0:
			fields = req(fmt.Sprintf("/users/%d", i%7), "127.0.0.1")
		case 1:
			fields = resp
		case 2:
			fields = req("/users/1", fmt.Sprintf("10.0.0.%d", i)) // new values: the table turns over
		}
		encodeBoth(e, theirs, &ob, &tb, fields)
		if !bytes.Equal(ob.Bytes(), tb.Bytes()) {
			t.Fatalf("block %d: ours %x, x/net %x", i, ob.Bytes(), tb.Bytes())
		}
		if i == 100 { // the peer shrinks the table mid-connection
			e.SetMaxDynamicTableSizeLimit(300)
			theirs.SetMaxDynamicTableSizeLimit(300)
		}
	}
}

// TestEncoderRoundTrip decodes what the encoder wrote with x/net's decoder,
// over random blocks: names from the static table, repeated and new
// ones; values empty, repeated, unique and longer than the table; some
// sensitive; the peer's limit changing between blocks, down to zero.
func TestEncoderRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{":authority", ":method", ":path", ":status", "accept", "content-type", "cookie", "date", "x-a", "x-b", "x-forwarded-for", "www-authenticate"}
	values := []string{"", "GET", "POST", "/", "/index.html", "200", "404", "gzip, deflate", "v1", "v2", strings.Repeat("long", 1100)}
	var buf bytes.Buffer
	e := NewEncoder(&buf)
	var got []hpack.HeaderField
	d := hpack.NewDecoder(defaultTableSize, func(f hpack.HeaderField) { got = append(got, f) })
	var total, size int
	for blk := range 3000 {
		if rng.IntN(50) == 0 {
			limit := []uint32{0, 64, 300, 1000, 4096, 8192}[rng.IntN(6)]
			e.SetMaxDynamicTableSizeLimit(limit)
			d.SetAllowedMaxDynamicTableSize(limit)
		}
		var want []hpack.HeaderField
		for range 1 + rng.IntN(12) {
			f := hpack.HeaderField{Name: names[rng.IntN(len(names))]}
			switch r := rng.IntN(10); {
			case r < 6:
				f.Value = values[rng.IntN(len(values))]
			case r < 9:
				f.Value = fmt.Sprintf("u%d", rng.IntN(40))
			default:
				f.Value = fmt.Sprintf("unique-%d-%d", blk, rng.Int())
			}
			f.Sensitive = rng.IntN(20) == 0
			want = append(want, f)
		}
		buf.Reset()
		got = got[:0]
		for _, f := range want {
			if err := e.WriteField(f); err != nil {
				t.Fatal(err)
			}
		}
		total += len(want)
		size += buf.Len()
		if _, err := d.Write(buf.Bytes()); err != nil {
			t.Fatalf("block %d: decoding %x: %v", blk, buf.Bytes(), err)
		}
		if err := d.Close(); err != nil {
			t.Fatalf("block %d: %v", blk, err)
		}
		if len(got) != len(want) {
			t.Fatalf("block %d: decoded %d fields, want %d", blk, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("block %d field %d: decoded %+v, want %+v", blk, i, got[i], want[i])
			}
		}
	}
	t.Logf("%d fields in %d bytes", total, size)
}

// TestEncoderIndexesRepeats: a repeated field is one byte once indexed,
// and an evicted one is a literal again (not a stale index).
func TestEncoderIndexesRepeats(t *testing.T) {
	var buf bytes.Buffer
	e := NewEncoder(&buf)
	f := hpack.HeaderField{Name: "x-custom", Value: "value"}
	_ = e.WriteField(f)
	if buf.Len() < 2 {
		t.Fatalf("first use: %x, want a literal", buf.Bytes())
	}
	buf.Reset()
	_ = e.WriteField(f)
	if want := []byte{0x80 | 62}; !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("second use: %x, want %x (dynamic index 62)", buf.Bytes(), want)
	}
	// Fill the table with other entries: f is evicted.
	for i := range 200 {
		_ = e.WriteField(hpack.HeaderField{Name: "x-other", Value: fmt.Sprint(i)})
	}
	buf.Reset()
	_ = e.WriteField(f)
	if buf.Len() < 2 || buf.Bytes()[0]&0x80 != 0 {
		t.Fatalf("after eviction: %x, want a literal", buf.Bytes())
	}
}

func BenchmarkEncoder(b *testing.B) {
	fields := []hpack.HeaderField{
		{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: "users"}, {Name: ":path", Value: "/users/1"},
		{Name: "user-agent", Value: "h2load nghttp2/1.64.0"},
		{Name: "x-forwarded-for", Value: "127.0.0.1"},
		{Name: "forwarded", Value: "for=\"127.0.0.1:40112\";proto=https;host=\"127.0.0.1:19020\""},
		{Name: "x-forwarded-proto", Value: "https"},
	}
	var buf bytes.Buffer
	b.Run("meshguard", func(b *testing.B) {
		e := NewEncoder(&buf)
		for b.Loop() {
			buf.Reset()
			for _, f := range fields {
				_ = e.WriteField(f)
			}
		}
	})
	b.Run("x-net", func(b *testing.B) {
		e := hpack.NewEncoder(&buf)
		for b.Loop() {
			buf.Reset()
			for _, f := range fields {
				_ = e.WriteField(f)
			}
		}
	})
}

// TestEncoderInsertionWrap: the caches keep insertion numbers modulo
// 2^32; across the wrap the bytes are still x/net's (repeats found,
// evictions the same).
func TestEncoderInsertionWrap(t *testing.T) {
	var ob, tb bytes.Buffer
	e := NewEncoder(&ob)
	e.inserted = 1<<32 - 3 // as if after four billion insertions (the table empty)
	theirs := hpack.NewEncoder(&tb)
	for i := range 300 {
		fields := []hpack.HeaderField{{Name: "x-fixed", Value: "same"}, {Name: "x-n", Value: fmt.Sprint(i)}}
		encodeBoth(e, theirs, &ob, &tb, fields)
		if !bytes.Equal(ob.Bytes(), tb.Bytes()) {
			t.Fatalf("block %d: ours %x, x/net %x", i, ob.Bytes(), tb.Bytes())
		}
	}
}

// TestEncoderFullBucket: more live entries than a cache bucket holds
// (names, and name+value pairs, chosen to hash to one bucket): the
// output is still x/net's, the lost ones found by scanning the table.
func TestEncoderFullBucket(t *testing.T) {
	bucket := func(h uint64) uint64 { return (h >> 32) & (cacheSlots - 1) &^ (bucketSlots - 1) }
	var sameName, samePair []hpack.HeaderField
	target := bucket(maphash.String(hashSeed, "x-0"))
	for i := 0; len(sameName) < 2*bucketSlots; i++ {
		name := fmt.Sprintf("x-%d", i)
		if bucket(maphash.String(hashSeed, name)) == target {
			sameName = append(sameName, hpack.HeaderField{Name: name, Value: "v"})
		}
	}
	hn := maphash.String(hashSeed, "x-pair")
	target = bucket(pairHash(hn, maphash.String(hashSeed, "0")))
	for i := 0; len(samePair) < 2*bucketSlots; i++ {
		value := fmt.Sprint(i)
		if bucket(pairHash(hn, maphash.String(hashSeed, value))) == target {
			samePair = append(samePair, hpack.HeaderField{Name: "x-pair", Value: value})
		}
	}
	for _, fields := range [][]hpack.HeaderField{sameName, samePair} {
		var ob, tb bytes.Buffer
		e := NewEncoder(&ob)
		theirs := hpack.NewEncoder(&tb)
		for blk := range 3 {
			encodeBoth(e, theirs, &ob, &tb, fields)
			if !bytes.Equal(ob.Bytes(), tb.Bytes()) {
				t.Fatalf("%s..., block %d: ours %x, x/net %x", fields[0].Name, blk, ob.Bytes(), tb.Bytes())
			}
		}
		if e.dropped == 0 {
			t.Fatalf("%s...: no cache entry was lost: the test did not fill a bucket", fields[0].Name)
		}
	}
}

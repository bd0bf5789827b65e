package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// TestBatchConn: concurrent writers' bytes all arrive, each writer's in
// order; Close sends what is still buffered; writes after Close fail.
func TestBatchConn(t *testing.T) {
	ln := listen(t)
	defer ln.Close()
	got := make(chan []string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		var lines []string
		sc := bufio.NewScanner(c)
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		got <- lines
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := newBatchConn(raw)
	const writers, each = 8, 2000
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := fmt.Fprintf(b, "%d:%d\n", w, i); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	big := strings.Repeat("x", 3*maxBatchPending) // exceeds the buffer: backpressure
	if _, err := io.WriteString(b, "big:"+big+"\n"); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write([]byte("late\n")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v, want net.ErrClosed", err)
	}
	lines := <-got
	next := make([]int, writers)
	for _, l := range lines[:len(lines)-1] {
		var w, i int
		if _, err := fmt.Sscanf(l, "%d:%d", &w, &i); err != nil {
			t.Fatalf("garbled line %q", l)
		}
		if i != next[w] {
			t.Fatalf("writer %d: got %d, want %d", w, i, next[w])
		}
		next[w]++
	}
	for w, n := range next {
		if n != each {
			t.Fatalf("writer %d: %d lines arrived, want %d", w, n, each)
		}
	}
	if last := lines[len(lines)-1]; last != "big:"+big {
		t.Fatalf("last line has %d bytes, want %d (Close lost buffered data)", len(last), len(big)+4)
	}
}

// TestBatchConnWriteError: once the connection fails, writes report it.
func TestBatchConnWriteError(t *testing.T) {
	a, c := net.Pipe()
	b := newBatchConn(a)
	c.Close()
	if _, err := b.Write([]byte("x")); err != nil {
		t.Fatalf("first write (buffered): %v", err)
	}
	eventually(t, "write error recorded", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.err != nil
	})
	if _, err := b.Write([]byte("y")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("write on a dead connection: %v, want io.ErrClosedPipe", err)
	}
	b.Close()
}

package h2flow

import (
	"errors"
	"testing"
)

func woken(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestSendTake(t *testing.T) {
	cases := []struct {
		name             string
		conn, stream     int64
		want             int64
		got              int64
		connAfter, after int64
	}{
		{"stream window bounds", 65535, 100, 1000, 100, 65435, 0},
		{"connection window bounds", 50, 1000, 1000, 50, 0, 950},
		{"want bounds", 65535, 65535, 10, 10, 65525, 65525},
		{"stream window empty", 65535, 0, 10, 0, 65535, 0},
		{"stream window negative", 65535, -5, 10, 0, 65535, -5},
		{"connection window empty", 0, 100, 10, 0, 0, 100},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn := Send{win: c.conn}
			s := NewSendStream(c.stream)
			n, wait := conn.Take(&s, c.want)
			if n != c.got || conn.win != c.connAfter || s.win != c.after {
				t.Fatalf("Take = %d (conn %d, stream %d), want %d (conn %d, stream %d)", n, conn.win, s.win, c.got, c.connAfter, c.after)
			}
			if (n == 0) != (wait != nil) {
				t.Fatalf("Take returned %d and wait channel %v", n, wait)
			}
			if n == 0 && (len(conn.waiters) == 1) != (c.conn <= 0) {
				t.Fatalf("waiters = %d with connection window %d", len(conn.waiters), c.conn)
			}
		})
	}
}

func TestSendWakes(t *testing.T) {
	conn := Send{}
	a, b := NewSendStream(100), NewSendStream(100)
	_, waitA := conn.Take(&a, 10)
	_, waitB := conn.Take(&b, 10)
	if err := conn.Grow(5); err != nil {
		t.Fatal(err)
	}
	if !woken(waitA) || !woken(waitB) {
		t.Fatal("a connection WINDOW_UPDATE did not wake the streams waiting for it")
	}
	if len(conn.waiters) != 0 {
		t.Fatal("waiters kept after waking")
	}
	if n, _ := conn.Take(&a, 10); n != 5 {
		t.Fatalf("after the update Take = %d, want 5", n)
	}

	s := NewSendStream(0)
	conn = NewSend()
	_, wait := conn.Take(&s, 10)
	if len(conn.waiters) != 0 {
		t.Fatal("a stream waiting on its own window queued for the connection's")
	}
	if err := s.Grow(7); err != nil || !woken(wait) {
		t.Fatalf("stream Grow: err %v, woken %v", err, woken(wait))
	}
	s.Wake()
	s.Wake() // never blocks
	if !woken(wait) || woken(wait) {
		t.Fatal("Wake must leave exactly one notification")
	}
}

func TestSendOverflow(t *testing.T) {
	conn := NewSend()
	if err := conn.Grow(MaxWindow - InitialWindow); err != nil {
		t.Fatalf("up to MaxWindow: %v", err)
	}
	if err := conn.Grow(1); !errors.Is(err, ErrOverflow) || conn.win != MaxWindow {
		t.Fatalf("past MaxWindow: err %v, window %d", err, conn.win)
	}
	s := NewSendStream(MaxWindow)
	if err := s.Grow(1); !errors.Is(err, ErrOverflow) {
		t.Fatalf("stream past MaxWindow: %v", err)
	}
	s = NewSendStream(10)
	if err := s.Adjust(-20); err != nil || s.win != -10 {
		t.Fatalf("a smaller initial window: err %v, window %d (want -10)", err, s.win)
	}
	if err := s.Adjust(MaxWindow); err != nil {
		t.Fatalf("back up to MaxWindow-10: %v", err)
	}
	if err := s.Adjust(11); !errors.Is(err, ErrOverflow) {
		t.Fatalf("SETTINGS past MaxWindow: %v", err)
	}
}

func TestRecv(t *testing.T) {
	r := NewRecv(100, 4) // update once 25 bytes are owed
	if !r.Take(60) || !r.Take(40) {
		t.Fatal("data within the window refused")
	}
	if r.Take(1) {
		t.Fatal("data past the window accepted")
	}
	steps := []struct {
		credit, inc int64
	}{{10, 0}, {14, 0}, {1, 25}, {30, 30}}
	for i, s := range steps {
		if got := r.Credit(s.credit); got != s.inc {
			t.Fatalf("step %d: Credit(%d) = %d, want %d", i, s.credit, got, s.inc)
		}
	}
	if !r.Take(55) || r.Take(1) {
		t.Fatal("the window did not grow by exactly the increments announced")
	}
	r.Owe(20)
	if got := r.Credit(5); got != 25 {
		t.Fatalf("Credit after Owe = %d, want 25", got)
	}
}

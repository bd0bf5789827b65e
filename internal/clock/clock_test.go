package clock

import (
	"testing"
	"time"
)

func TestFake(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := NewFake(start)
	a := f.After(time.Minute)
	b := f.After(time.Hour)
	now := f.After(0)
	if got := <-now; !got.Equal(start) {
		t.Fatalf("After(0) fired at %s", got)
	}
	if f.Waiters() != 2 || !f.NextDeadline().Equal(start.Add(time.Minute)) {
		t.Fatalf("waiters = %d, next = %s", f.Waiters(), f.NextDeadline())
	}
	f.Advance(59 * time.Second)
	select {
	case <-a:
		t.Fatal("fired early")
	default:
	}
	f.Advance(time.Second)
	if got := <-a; !got.Equal(start.Add(time.Minute)) {
		t.Fatalf("fired at %s", got)
	}
	f.Set(start) // never backwards
	if !f.Now().Equal(start.Add(time.Minute)) {
		t.Fatal("Set moved the clock backwards")
	}
	f.Set(start.Add(2 * time.Hour))
	<-b
	if f.Waiters() != 0 || !f.NextDeadline().IsZero() {
		t.Fatal("waiters left")
	}
}

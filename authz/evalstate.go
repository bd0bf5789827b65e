package authz

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// evalState is what one evaluation needs besides the policy: the memo of
// rule results (OPA's virtual cache), the deadline and the input document.
// OPA allocates a fresh virtual cache per evaluation (a hash map per level
// of every cached reference, some 30 allocations for the shipped policy),
// the deadline cost a context, a timer and an AfterFunc registration, and
// the input two objects; all three are reset or refilled and reused here,
// through a sync.Pool.
type evalState struct {
	rules    ruleCache
	deadline deadline
	input    inputDoc
}

var evalStates = sync.Pool{New: func() any { return new(evalState) }}

// getEvalState returns a reset state whose deadline fires after timeout.
func getEvalState(timeout time.Duration) *evalState {
	s := evalStates.Get().(*evalState)
	s.rules.reset()
	s.deadline.arm(timeout)
	return s
}

// putEvalState disarms s and returns it to the pool, unless its timer
// could no longer be stopped (it fired, or is firing): its callback might
// still run, and must not cancel a later evaluation.
func putEvalState(s *evalState) {
	if !s.deadline.disarm() {
		return
	}
	s.deadline.done = nil
	s.rules.release()
	evalStates.Put(s)
}

// deadline is the topdown.Cancel of one evaluation: the interpreter polls
// Cancelled between steps. It reports true once the per-evaluation timer
// has fired or the caller's context is done (polled, so that a cancellable
// request context costs no registration per evaluation).
type deadline struct {
	fired atomic.Bool
	timer *time.Timer
	done  <-chan struct{} // the caller's ctx.Done(), nil if it is never done
}

func (d *deadline) arm(timeout time.Duration) {
	d.fired.Store(false)
	if d.timer == nil {
		d.timer = time.AfterFunc(timeout, d.Cancel)
		return
	}
	d.timer.Reset(timeout)
}

// disarm stops the timer and reports whether it stopped it before it fired.
func (d *deadline) disarm() bool { return d.timer.Stop() }

// Cancel marks the evaluation as past its deadline.
func (d *deadline) Cancel() { d.fired.Store(true) }

// Cancelled reports whether the evaluation must stop.
func (d *deadline) Cancelled() bool {
	if d.fired.Load() {
		return true
	}
	if d.done != nil {
		select {
		case <-d.done:
			return true
		default:
		}
	}
	return false
}

// timedOut reports whether the timer fired (as opposed to the caller
// cancelling).
func (d *deadline) timedOut() bool { return d.fired.Load() }

// ruleCache implements topdown.VirtualCache: a stack of frames (the `with`
// keyword pushes one), each mapping a rule reference to its value or to
// "undefined". Unlike OPA's default it keeps its memory across evaluations:
// the terms of cached references live in one arena, entries in one slice
// per frame, found through a map from reference hash to the newest entry
// with that hash (entries with equal hashes are chained).
type ruleCache struct {
	frames []cacheFrame
	depth  int // frames[:depth] are in use; frames[depth-1] is active
	arena  []*ast.Term
}

type cacheFrame struct {
	entries    []cacheEntry
	byHash     map[int]int32 // hash → index of the newest entry with it
	arenaStart int           // arena length when the frame was pushed
}

type cacheEntry struct {
	hash      int
	off, n    int32 // the reference's terms: arena[off : off+n]
	prev      int32 // older entry with the same hash, or -1
	undefined bool
	value     *ast.Term
}

// Limits past which a pooled cache is dropped rather than kept: an
// evaluation that memoized unusually many rules must not pin that memory.
const (
	maxPooledCacheEntries = 1024
	maxPooledCacheTerms   = 8192
)

func (c *ruleCache) reset() {
	c.depth = 0
	c.arena = c.arena[:0]
	c.Push()
}

// release forgets the cached terms, so a pooled cache holds no policy
// values, and drops buffers that grew unusually large.
func (c *ruleCache) release() {
	for i := range c.frames {
		f := &c.frames[i]
		clear(f.entries)
		if cap(f.entries) > maxPooledCacheEntries {
			f.entries, f.byHash = nil, nil
		} else {
			f.entries = f.entries[:0]
			clear(f.byHash)
		}
	}
	clear(c.arena[:cap(c.arena)])
	if cap(c.arena) > maxPooledCacheTerms {
		c.arena = nil
	}
	c.depth = 0
}

// Push starts a new, empty frame.
func (c *ruleCache) Push() {
	if c.depth == len(c.frames) {
		c.frames = append(c.frames, cacheFrame{})
	}
	f := &c.frames[c.depth]
	f.entries = f.entries[:0]
	clear(f.byHash)
	f.arenaStart = len(c.arena)
	c.depth++
}

// Pop discards the active frame and its entries.
func (c *ruleCache) Pop() {
	if c.depth == 0 {
		return
	}
	c.depth--
	f := &c.frames[c.depth]
	clear(f.entries)
	f.entries = f.entries[:0]
	clear(f.byHash)
	clear(c.arena[f.arenaStart:])
	c.arena = c.arena[:f.arenaStart]
}

func (c *ruleCache) find(f *cacheFrame, ref ast.Ref, hash int) *cacheEntry {
	i, ok := f.byHash[hash]
	if !ok {
		return nil
	}
	for ; i >= 0; i = f.entries[i].prev {
		e := &f.entries[i]
		if e.hash == hash && c.equal(e, ref) {
			return e
		}
	}
	return nil
}

func (c *ruleCache) equal(e *cacheEntry, ref ast.Ref) bool {
	if int(e.n) != len(ref) {
		return false
	}
	for i, t := range c.arena[e.off : e.off+e.n] {
		if !t.Equal(ref[i]) {
			return false
		}
	}
	return true
}

// Get returns the value cached for ref; a nil term with true means ref was
// recorded as undefined, nil and false that nothing is cached.
func (c *ruleCache) Get(ref ast.Ref) (*ast.Term, bool) {
	f := &c.frames[c.depth-1]
	if len(f.entries) == 0 {
		return nil, false
	}
	e := c.find(f, ref, ref.Hash())
	if e == nil {
		return nil, false
	}
	if e.undefined {
		return nil, true
	}
	return e.value, false
}

// Put records value for ref (nil: undefined). The reference's terms are
// copied: the interpreter passes slices of buffers it reuses.
func (c *ruleCache) Put(ref ast.Ref, value *ast.Term) {
	f := &c.frames[c.depth-1]
	hash := ref.Hash()
	if e := c.find(f, ref, hash); e != nil {
		e.value, e.undefined = value, value == nil
		return
	}
	if f.byHash == nil {
		f.byHash = make(map[int]int32)
	}
	prev, ok := f.byHash[hash]
	if !ok {
		prev = -1
	}
	off := len(c.arena)
	c.arena = append(c.arena, ref...)
	f.byHash[hash] = int32(len(f.entries))
	f.entries = append(f.entries, cacheEntry{
		hash: hash, off: int32(off), n: int32(len(ref)), prev: prev,
		undefined: value == nil, value: value,
	})
}

// Keys returns the references cached with a value in the active frame.
func (c *ruleCache) Keys() []ast.Ref {
	f := &c.frames[c.depth-1]
	var keys []ast.Ref
	for _, e := range f.entries {
		if e.value != nil {
			keys = append(keys, append(ast.Ref(nil), c.arena[e.off:e.off+e.n]...))
		}
	}
	return keys
}

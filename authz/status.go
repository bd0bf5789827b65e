package authz

import (
	"fmt"
	"io"
	"os"
)

// Status is the engine's state for the agent's /status page.
type Status struct {
	Revision string   `json:"revision,omitempty"` // content hash in force; "" when none
	Ready    bool     `json:"ready"`
	Error    string   `json:"error,omitempty"`   // why no policy is loaded, or why the last revision was refused
	Files    []string `json:"files,omitempty"`   // files of the revision in force
	DryRun   bool     `json:"dry_run"`           // --dry-run
	Cache    bool     `json:"decision_cache"`    // decisions of this revision are cached
	Uncached []string `json:"uncached_builtins"` // non-deterministic built-ins that turn the cache off
}

// Status reports the revision in force and the last reload failure.
func (e *Engine) Status() Status {
	st := Status{DryRun: e.cfg.DryRun, Uncached: []string{}}
	set := e.current.Load()
	if set == nil {
		if err := e.Ready(); err != nil {
			st.Error = err.Error()
		}
		return st
	}
	st.Revision, st.Ready, st.Files = set.revision, true, set.files
	st.Cache = e.cache != nil && len(set.nondeterministic) == 0
	st.Uncached = append(st.Uncached, set.nondeterministic...)
	if msg := e.refusal.Load(); msg != nil {
		st.Error = *msg
	}
	return st
}

// OpenAuditLog opens the audit sink named by --audit-log: "" or "-" is
// stderr (not closed by the returned closer), anything else a file opened
// for appending, created 0600 (the log names callers and paths).
func OpenAuditLog(path string, stderr io.Writer) (io.Writer, func() error, error) {
	if path == "" || path == "-" {
		return stderr, func() error { return nil }, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("opening audit log: %w", err)
	}
	return f, f.Close, nil
}

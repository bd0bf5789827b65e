package main

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const modulePath = "github.com/meshguard/meshguard"

// allowedImports is DESIGN.md's package table: which meshguard packages each
// package may import (outside its tests). internal/* helpers import none of
// the top-level packages. main (the root) may import everything.
var allowedImports = map[string][]string{
	"identity": {},
	"authz":    {},
	"registry": {},
	"proxy":    {"identity", "authz", "registry"},
	"ca":       {"registry"},
}

// TestImportArrows fails when an import runs against DESIGN.md's table,
// e.g. proxy importing ca, or authz importing anything of ours.
func TestImportArrows(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		seen++
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, modulePath), "/")
		if rel == "" {
			continue // main wires everything
		}
		top := strings.SplitN(rel, "/", 2)[0]
		allowed, known := allowedImports[top]
		if top == "internal" {
			known = true
		}
		if !known {
			// e2e, deploy helpers and the like may import what they drive.
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, modulePath+"/") {
				continue
			}
			dep := strings.TrimPrefix(imp, modulePath+"/")
			depTop := strings.SplitN(dep, "/", 2)[0]
			if depTop == "internal" || depTop == top {
				continue
			}
			if top == "internal" || !contains(allowed, depTop) {
				t.Errorf("%s imports %s: DESIGN.md does not allow %s -> %s", p.ImportPath, imp, top, depTop)
			}
		}
	}
	if seen == 0 {
		t.Fatal("go list returned no packages")
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// composeFile is the subset of the Compose specification meshguard's file
// uses; strict decoding refuses anything else, so a typo fails the test.
type composeFile struct {
	Name     string                    `json:"name"`
	XImage   map[string]any            `json:"x-image"`
	Services map[string]composeService `json:"services"`
	Volumes  map[string]any            `json:"volumes"`
}

type composeService struct {
	Image       string                       `json:"image"`
	Build       map[string]string            `json:"build"`
	Entrypoint  []string                     `json:"entrypoint"`
	Command     []string                     `json:"command"`
	Environment map[string]string            `json:"environment"`
	Volumes     []string                     `json:"volumes"`
	DependsOn   map[string]map[string]string `json:"depends_on"`
	NetworkMode string                       `json:"network_mode"`
	Restart     string                       `json:"restart"`
}

func TestComposeFile(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("compose", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.UnmarshalStrict(raw, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	var agents, apps int
	for name, s := range c.Services {
		if s.Image == "" {
			t.Errorf("service %s has no image", name)
		}
		for dep := range s.DependsOn {
			if _, ok := c.Services[dep]; !ok {
				t.Errorf("service %s depends on undefined service %s", name, dep)
			}
		}
		for _, v := range s.Volumes {
			src := strings.SplitN(v, ":", 2)[0]
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(filepath.Join("compose", src)); err != nil {
					t.Errorf("service %s mounts %s: %v", name, src, err)
				}
				continue
			}
			if _, ok := c.Volumes[src]; !ok {
				t.Errorf("service %s mounts undefined volume %s", name, src)
			}
		}
		switch {
		case strings.HasSuffix(name, "-agent"):
			agents++
			if s.Environment["MESHGUARD_SERVICE"]+"-agent" != name {
				t.Errorf("%s: MESHGUARD_SERVICE=%q does not match the service name", name, s.Environment["MESHGUARD_SERVICE"])
			}
			if !strings.HasPrefix(s.Environment["MESHGUARD_APP"], "127.0.0.1:") {
				t.Errorf("%s: the app must be reached on loopback, got %q", name, s.Environment["MESHGUARD_APP"])
			}
		case strings.HasSuffix(name, "-app"):
			apps++
			agent := strings.TrimSuffix(name, "-app") + "-agent"
			if s.NetworkMode != "service:"+agent {
				t.Errorf("%s: network_mode %q, want service:%s (share the agent's loopback)", name, s.NetworkMode, agent)
			}
		}
	}
	if _, ok := c.Services["ca"]; !ok || agents < 2 || apps < 2 {
		t.Fatalf("want a ca, two agents and two apps; have ca=%v agents=%d apps=%d", ok, agents, apps)
	}
}

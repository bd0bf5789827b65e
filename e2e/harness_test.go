package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binary is the meshguard binary built once for all tests in TestMain.
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "meshguard-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "meshguard")
	// go test puts GOROOT/bin first on PATH, so this is the go running us.
	goBin, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: finding the go command:", err)
		os.Exit(1)
	}
	build := exec.Command(goBin, "build", "-o", binary, ".")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building meshguard: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needBinary skips in -short mode, where TestMain builds nothing.
func needBinary(t *testing.T) {
	t.Helper()
	if binary == "" {
		t.Skip("e2e tests need the built binary; skipped in -short mode")
	}
}

// proc is one running meshguard process with its output captured.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer // stdout
	errb bytes.Buffer // stderr (JSON logs)
	done chan struct{}
	err  error
}

type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// start runs the binary with args and extra environment variables. The
// process is stopped (SIGTERM, then SIGKILL after a deadline) at cleanup and
// its output is logged if the test failed.
func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	needBinary(t)
	p := &proc{t: t, name: name, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = lockedWriter{&p.mu, &p.out}
	p.cmd.Stderr = lockedWriter{&p.mu, &p.errb}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(10 * time.Second)
		if t.Failed() {
			t.Logf("--- %s stdout:\n%s\n--- %s stderr:\n%s", name, p.stdout(), name, p.stderr())
		}
	})
	return p
}

// stop sends SIGTERM and waits up to grace before killing.
func (p *proc) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return p.err
}

// kill sends SIGKILL, as a crash would.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) stdout() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *proc) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errb.String()
}

// runCmd runs the binary to completion and returns stdout, stderr and the
// exit code.
func runCmd(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	needBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("running meshguard %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), code
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
	t.Fatalf("%s: not true within %s: %v", what, within, err)
}

// Ports handed to processes the tests start come from below the kernel's
// ephemeral range (32768-60999 by default). A port picked from that range,
// closed and handed to a child could be taken meanwhile as the source port
// of some outgoing connection; ports below it never are.
const (
	portLow  = 20000
	portHigh = 32000 // exclusive; meshguard dev takes 33 ports from its base
)

var (
	portMu   sync.Mutex
	portNext = portLow + os.Getpid()%(portHigh-portLow)
)

// freeAddr returns a loopback address with a port that was free a moment
// ago, never the same one twice in this test binary.
func freeAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1))
}

// freePorts reserves n consecutive free ports and returns the first.
func freePorts(t *testing.T, n int) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for tries := 0; tries < portHigh-portLow; tries++ {
		base := portNext
		if base+n > portHigh {
			base = portLow
		}
		portNext = base + n
		ok := true
		for p := base; p < base+n && ok; p++ {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				continue
			}
			ln.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatalf("no %d free consecutive ports in %d-%d", n, portLow, portHigh)
	return 0
}

// lines returns the JSON log lines of s that contain every needle.
func lines(s string, needles ...string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		ok := true
		for _, n := range needles {
			ok = ok && strings.Contains(sc.Text(), n)
		}
		if ok {
			out = append(out, sc.Text())
		}
	}
	return out
}

// TestBinaryUsage checks the built binary's exit codes as a shell sees them.
func TestBinaryUsage(t *testing.T) {
	needBinary(t)
	tests := []struct {
		name     string
		args     []string
		env      []string
		wantCode int
		wantErr  string
	}{
		{name: "no args", args: nil, wantCode: 2, wantErr: "usage: meshguard"},
		{name: "unknown command", args: []string{"mesh"}, wantCode: 2, wantErr: "unknown command"},
		{name: "env flag with bad value", args: []string{"demo-app"}, env: []string{"MESHGUARD_NAME=x", "MESHGUARD_LISTEN=not-an-address"}, wantCode: 2, wantErr: "--listen not-an-address"},
		{name: "version", args: []string{"version"}, wantCode: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := runCmd(t, tc.env, tc.args...)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.wantCode, stderr)
			}
			if !strings.Contains(stderr, tc.wantErr) {
				t.Fatalf("stderr %q lacks %q", stderr, tc.wantErr)
			}
		})
	}
}

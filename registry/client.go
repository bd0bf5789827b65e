package registry

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MaxEventBytes bounds one line of a watch stream (a snapshot of a large
// registry is one line).
const MaxEventBytes = 256 << 20

// DefaultIdleTimeout is how long a watch stream may stay silent (heartbeats
// included) before the client drops it and reconnects.
const DefaultIdleTimeout = 3 * DefaultHeartbeat

// Client calls the registry API of one CA over mTLS.
type Client struct {
	hc   *http.Client
	base *url.URL
	idle time.Duration
}

// NewClient returns a client for the CA at baseURL (https://host:port). hc
// must present the agent's SVID and verify the CA (the caller builds it).
func NewClient(hc *http.Client, baseURL string) (*Client, error) {
	if hc == nil {
		return nil, errors.New("registry client: no HTTP client")
	}
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("registry client: invalid CA URL %q: want https://host:port", baseURL)
	}
	u.RawQuery, u.Fragment = "", ""
	return &Client{hc: hc, base: u, idle: DefaultIdleTimeout}, nil
}

// SetIdleTimeout changes how long a watch stream may stay silent before
// Watch gives up on it (DefaultIdleTimeout; keep it above the server's
// heartbeat period).
func (c *Client) SetIdleTimeout(d time.Duration) {
	if d > 0 {
		c.idle = d
	}
}

// url joins the base URL and an already escaped path.
func (c *Client) url(escapedPath string) string {
	return strings.TrimSuffix(c.base.String(), "/") + escapedPath
}

func entryPath(k Key) string {
	return "/v1/registry/entries/" + url.PathEscape(k.Service) + "/" + url.PathEscape(k.Address)
}

// do sends a request and decodes a JSON answer into out (if not nil).
func (c *Client) do(ctx context.Context, method, rawURL string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, rawURL, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return readAPIError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

func readAPIError(resp *http.Response) error {
	e := &APIError{Status: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, e) != nil || e.Code == "" {
		e.Code = strings.ToLower(strings.ReplaceAll(http.StatusText(resp.StatusCode), " ", "_"))
		e.Message = strings.TrimSpace(string(b))
	}
	return e
}

// Register creates or replaces the caller's entry.
func (c *Client) Register(ctx context.Context, reg Registration) (Entry, error) {
	var e Entry
	if err := c.do(ctx, http.MethodPost, c.url("/v1/registry/entries"), reg, &e); err != nil {
		return Entry{}, fmt.Errorf("register %s: %w", reg.Entry().Key(), err)
	}
	return e, nil
}

// Renew extends the lease of the caller's entry k; errors.Is(err,
// ErrNotFound) when the registry no longer has it.
func (c *Client) Renew(ctx context.Context, k Key) (Entry, error) {
	var e Entry
	if err := c.do(ctx, http.MethodPost, c.url(entryPath(k)+"/renew"), nil, &e); err != nil {
		return Entry{}, fmt.Errorf("renew %s: %w", k, err)
	}
	return e, nil
}

// Deregister deletes the caller's entry k.
func (c *Client) Deregister(ctx context.Context, k Key) error {
	if err := c.do(ctx, http.MethodDelete, c.url(entryPath(k)), nil, nil); err != nil {
		return fmt.Errorf("deregister %s: %w", k, err)
	}
	return nil
}

// List returns every entry with its lease expiry.
func (c *Client) List(ctx context.Context) (Snapshot, error) {
	var s Snapshot
	if err := c.do(ctx, http.MethodGet, c.url("/v1/registry/entries"), nil, &s); err != nil {
		return Snapshot{}, fmt.Errorf("list registry: %w", err)
	}
	return s, nil
}

// Watch streams events from since (0: a snapshot first) into fn until ctx
// ends (nil), fn fails (its error), the stream breaks or stays silent for
// the idle timeout (an error: reconnect from the last revision).
func (c *Client) Watch(ctx context.Context, since int64, fn func(Event) error) error {
	return c.WatchStore(ctx, "", since, fn)
}

// WatchStore is Watch resuming only within the store named store (the
// Store of the last snapshot): a registry with another store answers with a
// snapshot.
func (c *Client) WatchStore(ctx context.Context, store string, since int64, fn func(Event) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	u := c.url("/v1/registry/watch")
	if since > 0 {
		u += "?since=" + strconv.FormatInt(since, 10)
		if store != "" {
			u += "&store=" + url.QueryEscape(store)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	idle := time.AfterFunc(c.idle, cancel)
	defer idle.Stop()
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil && !idle.Stop() {
			return fmt.Errorf("watch registry: no answer within %v", c.idle)
		}
		return fmt.Errorf("watch registry: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("watch registry: %w", readAPIError(resp))
	}
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := readLine(r, MaxEventBytes)
		if err != nil {
			if ctx.Err() != nil {
				if !idle.Stop() {
					return fmt.Errorf("watch registry: stream silent for %v", c.idle)
				}
				return nil
			}
			return fmt.Errorf("watch registry: %w", err)
		}
		idle.Reset(c.idle)
		var ev Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("watch registry: decode event: %w", err)
		}
		if err := checkEvent(ev); err != nil {
			return fmt.Errorf("watch registry: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// checkEvent refuses events a table cannot apply.
func checkEvent(ev Event) error {
	switch ev.Type {
	case EventHeartbeat, EventSnapshot:
		return nil
	case EventPut, EventDelete:
		if ev.Entry == nil {
			return fmt.Errorf("%s event at revision %d without an entry", ev.Type, ev.Revision)
		}
		return nil
	}
	return fmt.Errorf("unknown event type %q", ev.Type)
}

var errStreamEnded = errors.New("stream ended")

func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(buf)+len(chunk) > limit {
			return nil, fmt.Errorf("event longer than %d bytes", limit)
		}
		buf = append(buf, chunk...)
		switch {
		case err == nil:
			return buf, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(buf) == 0:
			return nil, errStreamEnded
		case errors.Is(err, io.EOF):
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

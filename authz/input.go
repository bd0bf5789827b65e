package authz

// Input is the document every policy sees as `input`. Its JSON form is
// exactly DESIGN.md's input document; the field tags are the contract.
type Input struct {
	Source      Source      `json:"source"`
	Destination Destination `json:"destination"`
	Request     Request     `json:"request"`
}

// Source is the verified caller: taken from its X.509-SVID, never from a header.
type Source struct {
	SPIFFEID    string `json:"spiffe_id"`
	TrustDomain string `json:"trust_domain"`
	Service     string `json:"service"`
}

// Destination is this agent's own workload.
type Destination struct {
	SPIFFEID string `json:"spiffe_id"`
	Service  string `json:"service"`
}

// Request is the HTTP request after path normalization.
type Request struct {
	Method   string              `json:"method"`
	Path     string              `json:"path"` // normalized: see DESIGN.md, Security rules
	Query    map[string][]string `json:"query"`
	Headers  map[string]string   `json:"headers"` // lower-case names
	Host     string              `json:"host"`
	Protocol string              `json:"protocol"` // "HTTP/1.1", "HTTP/2.0"
}

// Decision is the outcome of one authorization. A deny is a Decision with
// Allow false, never an error: errors inside evaluation become denies with a
// "policy error: ..." reason.
type Decision struct {
	Allow    bool     `json:"allow"`
	Reasons  []string `json:"reasons,omitempty"`
	ID       string   `json:"decision_id"`
	Revision string   `json:"policy_revision"`
	DryRun   bool     `json:"dry_run"`
	Cached   bool     `json:"cached"`
}

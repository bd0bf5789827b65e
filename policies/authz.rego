# METADATA
# title: meshguard allow-list
# description: |
#   Allows a request when data.meshguard.allowlist grants it and no deny
#   rule (deny.rego) overrides the grant. Configure data.json; the rules
#   rarely need changing.
#
#   data.meshguard.allowlist[<destination service>][<caller>] is a list of
#   grants. <caller> is a SPIFFE ID ("spiffe://example.org/svc/web") or a
#   service name ("web"); a service name only matches callers of the
#   destination's own trust domain. A grant is
#     {"methods": ["GET", ...] or ["*"],
#      "paths":   ["/users/*", "/reports/**"],     (glob, "/"-separated)
#      "headers": {"x-tenant": "acme"}}             (optional, exact values)
package meshguard.authz

default allow := false

# A request is allowed when some grant covers it and nothing denies it.
allow if {
	granted
	count(deny) == 0
}

# reasons says why a request is denied: every deny override that fired, and
# why no grant matched.
reasons contains reason if {
	some reason in deny
}

reasons contains reason if {
	not granted
	reason := not_granted_reason
}

# granted holds when one grant for this caller on this destination covers
# the method, the path and the required headers.
granted if {
	some grant in grants
	method_matches(grant)
	path_matches(grant)
	headers_match(grant)
}

destination_entry := data.meshguard.allowlist[input.destination.service]

# grants are the caller's grants, by SPIFFE ID ...
grants contains grant if {
	some grant in destination_entry[input.source.spiffe_id]
}

# ... or by service name, for a caller of the destination's trust domain.
grants contains grant if {
	input.source.trust_domain == destination_trust_domain
	some grant in destination_entry[input.source.service]
}

destination_trust_domain := split(input.destination.spiffe_id, "/")[2]

method_matches(grant) if "*" in grant.methods

method_matches(grant) if input.request.method in grant.methods

path_matches(grant) if {
	some pattern in grant.paths
	glob.match(pattern, ["/"], input.request.path)
}

headers_match(grant) if {
	every name, value in object.get(grant, "headers", {}) {
		input.request.headers[name] == value
	}
}

not_granted_reason := sprintf("destination service %q has no allow-list entry", [input.destination.service]) if {
	not destination_entry
} else := sprintf("caller %s has no grant on service %q", [input.source.spiffe_id, input.destination.service]) if {
	count(grants) == 0
} else := sprintf("no grant lets %s call %s %s on service %q", [
	input.source.spiffe_id,
	input.request.method,
	input.request.path,
	input.destination.service,
])

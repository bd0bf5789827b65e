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
# the request. Callers are matched by SPIFFE ID, or by service name when
# they belong to the destination's own trust domain.
granted if {
	some grant in destination_entry[input.source.spiffe_id]
	covers(grant)
}

granted if {
	input.source.trust_domain == destination_trust_domain
	some grant in destination_entry[input.source.service]
	covers(grant)
}

# covers: the method ("*" = any), the path (glob: "*" stays within a
# segment, "**" crosses segments) and the required headers (exact values).
#
# The rules are written as equalities between input fields and data on
# purpose: meshguard partially evaluates the policy against data.json when
# it loads it, which turns every grant into a rule like
#   allow if { input.source.service == "web"; input.request.method == "GET"; ... }
# that OPA's rule index selects by value, so a request is checked against
# its own few grants however long the allow-list grows.
covers(grant) if {
	method_matches(grant.methods)
	path_matches(grant.paths)
	headers_match(grant)
}

method_matches(methods) if "*" in methods

method_matches(methods) if {
	some method in methods
	method == input.request.method
}

path_matches(patterns) if {
	some pattern in patterns
	path_pattern_matches(pattern)
}

# path_pattern_matches: the path matches the glob pattern. The two commonest
# shapes are tested for what they are, without glob.match: a pattern without
# glob syntax matches exactly itself, and "<literal>/**" matches exactly the
# paths starting with "<literal>/" ("**" matches anything, "" included).
# Partial evaluation decides the shape of each pattern at load time, so a
# grant becomes an equality or a startswith on input.request.path, which
# OPA's rule index answers directly and cheaply; glob.match is left for the
# other patterns. (path_shapes_test.rego checks the shapes against
# glob.match itself.)
path_pattern_matches(pattern) if {
	not has_glob_syntax(pattern)
	input.request.path == pattern
}

path_pattern_matches(pattern) if {
	endswith(pattern, "/**")
	prefix := trim_suffix(pattern, "**")
	not has_glob_syntax(prefix)
	startswith(input.request.path, prefix)
}

path_pattern_matches(pattern) if {
	has_glob_syntax(trim_suffix(pattern, "/**"))
	glob.match(pattern, ["/"], input.request.path)
}

# has_glob_syntax: s holds a glob meta character (those glob.quote_meta
# escapes; ",", "!" and "-" are special only inside "{...}" and "[...]").
has_glob_syntax(s) if regex.match(`[*?\\\[\]{}]`, s)

headers_match(grant) if not grant.headers

headers_match(grant) if {
	every name, value in grant.headers {
		input.request.headers[name] == value
	}
}

destination_entry := data.meshguard.allowlist[input.destination.service]

destination_trust_domain := split(input.destination.spiffe_id, "/")[2]

# has_grants holds when the caller has any grant on the destination (only
# used to word the reason of a denial).
has_grants if count(destination_entry[input.source.spiffe_id]) > 0

has_grants if {
	input.source.trust_domain == destination_trust_domain
	count(destination_entry[input.source.service]) > 0
}

not_granted_reason := sprintf("destination service %q has no allow-list entry", [input.destination.service]) if {
	not destination_entry
} else := sprintf("caller %s has no grant on service %q", [input.source.spiffe_id, input.destination.service]) if {
	not has_grants
} else := sprintf("no grant lets %s call %s %s on service %q", [
	input.source.spiffe_id,
	input.request.method,
	input.request.path,
	input.destination.service,
])

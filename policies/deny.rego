# Deny overrides: they win over any grant. data.meshguard.deny is a list of
#     {"reason":  "why (goes to the audit log)",
#      "methods": ["TRACE"],            (optional; absent = any method)
#      "paths":   ["/admin/**"],        (optional; absent = any path)
#      "except":  ["spiffe://example.org/svc/ops"]}   (optional callers by
#                                         SPIFFE ID or service name)
package meshguard.authz

# deny is the set of reasons of the deny overrides that match this request.
# An absent "methods" or "paths" matches any method or path.
deny contains rule.reason if {
	some rule in data.meshguard.deny
	some method in object.get(rule, "methods", ["*"])
	method in {"*", input.request.method}
	some pattern in object.get(rule, "paths", ["**"])
	glob.match(pattern, ["/"], input.request.path)
	not excepted(rule)
}

# excepted holds when the rule's "except" lists the caller, by SPIFFE ID or
# by service name (the latter only within the destination's trust domain).
excepted(rule) if input.source.spiffe_id in rule.except

excepted(rule) if {
	input.source.trust_domain == destination_trust_domain
	input.source.service in rule.except
}

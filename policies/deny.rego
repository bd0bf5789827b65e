# Deny overrides: they win over any grant. data.meshguard.deny is a list of
#     {"reason":  "why (goes to the audit log)",
#      "methods": ["TRACE"],            (optional; absent = any method)
#      "paths":   ["/admin/**"],        (optional; absent = any path)
#      "except":  ["spiffe://example.org/svc/ops"]}   (optional callers by
#                                         SPIFFE ID or service name)
package meshguard.authz

# deny is the set of reasons of the deny overrides that match this request.
# (Written as equalities for the rule index, as explained in authz.rego.)
deny contains rule.reason if {
	some rule in data.meshguard.deny
	deny_method_matches(rule)
	deny_path_matches(rule)
	not excepted(rule)
}

deny_method_matches(rule) if not rule.methods

deny_method_matches(rule) if {
	some method in rule.methods
	method == input.request.method
}

deny_path_matches(rule) if not rule.paths

deny_path_matches(rule) if path_matches(rule.paths)

# excepted holds when the rule's "except" lists the caller, by SPIFFE ID or
# by service name (the latter only within the destination's trust domain).
excepted(rule) if {
	some caller in rule.except
	caller == input.source.spiffe_id
}

excepted(rule) if {
	input.source.trust_domain == destination_trust_domain
	some caller in rule.except
	caller == input.source.service
}

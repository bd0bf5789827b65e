# Deny overrides: they win over any grant. data.meshguard.deny is a list of
#     {"reason":  "why (goes to the audit log)",
#      "methods": ["TRACE"],            (optional; absent = any method)
#      "paths":   ["/admin/**"],        (optional; absent = any path)
#      "except":  ["spiffe://example.org/svc/ops"]}   (optional callers by
#                                         SPIFFE ID or service name)
package meshguard.authz

# deny is the set of reasons of the deny overrides that match this request.
deny contains rule.reason if {
	some rule in data.meshguard.deny
	deny_method_matches(rule)
	deny_path_matches(rule)
	not excepted(rule)
}

deny_method_matches(rule) if not rule.methods

deny_method_matches(rule) if input.request.method in rule.methods

deny_path_matches(rule) if not rule.paths

deny_path_matches(rule) if {
	some pattern in rule.paths
	glob.match(pattern, ["/"], input.request.path)
}

excepted(rule) if input.source.spiffe_id in object.get(rule, "except", [])

excepted(rule) if {
	input.source.trust_domain == destination_trust_domain
	input.source.service in object.get(rule, "except", [])
}

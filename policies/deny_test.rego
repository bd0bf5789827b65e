package meshguard.authz_test

import data.meshguard.authz

# deny-override: admin may call everything on users, except the admin
# endpoints, which only ops may reach.
test_deny_overrides_grant if {
	r := req("admin", "users", "GET", "/admin/keys")
	not allowed(r)
	reasons_of(r) == {"admin endpoints are reserved for the ops service"}
}

test_deny_exception_by_spiffe_id if {
	list := {"users": {"ops": [{"methods": ["*"], "paths": ["/**"]}]}}
	authz.allow with input as req("ops", "users", "GET", "/admin/keys") with data.meshguard.allowlist as list with data.meshguard.deny as fixture_deny
}

test_deny_exception_by_service_name if {
	rules := [{"reason": "no", "paths": ["/admin/**"], "except": ["ops"]}]
	list := {"users": {"ops": [{"methods": ["*"], "paths": ["/**"]}]}}
	authz.allow with input as req("ops", "users", "GET", "/admin/keys") with data.meshguard.allowlist as list with data.meshguard.deny as rules
}

test_deny_exception_by_service_name_needs_same_trust_domain if {
	rules := [{"reason": "no", "paths": ["/admin/**"], "except": ["ops"]}]
	list := {"users": {"spiffe://other.org/svc/ops": [{"methods": ["*"], "paths": ["/**"]}]}}
	foreign := object.union(req("ops", "users", "GET", "/admin/keys"), {"source": {"spiffe_id": "spiffe://other.org/svc/ops", "trust_domain": "other.org", "service": "ops"}})
	not authz.allow with input as foreign with data.meshguard.allowlist as list with data.meshguard.deny as rules
}

test_deny_by_method_any_path if {
	r := req("admin", "users", "TRACE", "/users/42")
	not allowed(r)
	reasons_of(r) == {"TRACE and CONNECT are never allowed through the mesh"}
}

test_deny_by_path_any_method if {
	r := req("admin", "users", "GET", "/internal/debug")
	not allowed(r)
	reasons_of(r) == {"internal endpoints are not reachable through the mesh"}
}

# Several overrides and a missing grant all show up in reasons.
test_all_reasons_reported if {
	r := req("web", "users", "TRACE", "/internal/x")
	reasons_of(r) == {
		"TRACE and CONNECT are never allowed through the mesh",
		"internal endpoints are not reachable through the mesh",
		`no grant lets spiffe://example.org/svc/web call TRACE /internal/x on service "users"`,
	}
}

test_no_deny_rules_no_override if {
	count(authz.deny) == 0 with input as req("admin", "users", "GET", "/admin/keys") with data.meshguard.deny as []
}

package meshguard.authz_test

import data.meshguard.authz

# req builds an input: caller service name, destination service, method, path.
req(caller, dest, method, path) := {
	"source": {"spiffe_id": sprintf("spiffe://example.org/svc/%s", [caller]), "trust_domain": "example.org", "service": caller},
	"destination": {"spiffe_id": sprintf("spiffe://example.org/svc/%s", [dest]), "service": dest},
	"request": {"method": method, "path": path, "query": {}, "headers": {}, "host": dest, "protocol": "HTTP/2.0"},
}

# --- allow: grants from data.json, by service name ---

test_web_reads_a_user if allowed(req("web", "users", "GET", "/users/42"))

test_web_lists_users if allowed(req("web", "users", "GET", "/users"))

test_web_allow_has_no_reasons if {
	count(reasons_of(req("web", "users", "GET", "/users/42"))) == 0
}

# method/path per caller: web may only read users.
test_web_cannot_delete_a_user if {
	not allowed(req("web", "users", "DELETE", "/users/42"))
	reasons_of(req("web", "users", "DELETE", "/users/42")) == {`no grant lets spiffe://example.org/svc/web call DELETE /users/42 on service "users"`}
}

# "*" in a path glob stops at "/".
test_web_glob_does_not_cross_segments if {
	not allowed(req("web", "users", "GET", "/users/42/billing"))
}

# "**" crosses segments.
test_web_orders_double_star if allowed(req("web", "orders", "POST", "/orders/7/items/3"))

# --- allow by SPIFFE ID ---

test_admin_by_spiffe_id_any_method if allowed(req("admin", "users", "DELETE", "/users/42"))

# A service-name grant does not match a caller from another trust domain.
test_service_name_needs_same_trust_domain if {
	foreign := object.union(req("web", "users", "GET", "/users/42"), {"source": {"spiffe_id": "spiffe://evil.org/svc/web", "trust_domain": "evil.org", "service": "web"}})
	not allowed(foreign)
	reasons_of(foreign) == {`caller spiffe://evil.org/svc/web has no grant on service "users"`}
}

# A SPIFFE-ID grant is exact: same service name, other trust domain, no match.
test_spiffe_id_grant_is_exact if {
	foreign := object.union(req("admin", "users", "GET", "/users/42"), {"source": {"spiffe_id": "spiffe://evil.org/svc/admin", "trust_domain": "evil.org", "service": "admin"}})
	not allowed(foreign)
}

# --- header match ---

test_billing_write_needs_tenant_header if {
	r := req("billing", "users", "PUT", "/users/42/billing")
	not allowed(r)
	allowed(object.union(r, {"request": {"headers": {"x-tenant": "acme"}}}))
	not allowed(object.union(r, {"request": {"headers": {"x-tenant": "other"}}}))
}

test_billing_read_needs_no_header if allowed(req("billing", "users", "GET", "/users/42/billing"))

# --- default deny, with a reason for each case ---

test_unknown_destination_denied if {
	not allowed(req("web", "payments", "GET", "/"))
	reasons_of(req("web", "payments", "GET", "/")) == {`destination service "payments" has no allow-list entry`}
}

test_unknown_caller_denied if {
	not allowed(req("stranger", "users", "GET", "/users/42"))
	reasons_of(req("stranger", "users", "GET", "/users/42")) == {`caller spiffe://example.org/svc/stranger has no grant on service "users"`}
}

test_empty_input_denied if {
	not allowed({})
}

# --- the rules work on any allow-list, not only the shipped data ---

test_custom_allowlist if {
	list := {"api": {"cli": [{"methods": ["PATCH"], "paths": ["/v1/*"]}]}}
	authz.allow with input as req("cli", "api", "PATCH", "/v1/x") with data.meshguard.allowlist as list with data.meshguard.deny as []
	not authz.allow with input as req("cli", "api", "PATCH", "/v2/x") with data.meshguard.allowlist as list with data.meshguard.deny as []
}

# A caller granted by SPIFFE ID but not for this method gets the "no grant
# lets" reason, not "has no grant".
test_spiffe_id_grant_wrong_method if {
	list := {"api": {"spiffe://example.org/svc/cli": [{"methods": ["GET"], "paths": ["/**"]}]}}
	r := req("cli", "api", "POST", "/v1/x")
	not authz.allow with input as r with data.meshguard.allowlist as list with data.meshguard.deny as fixture_deny
	authz.reasons == {`no grant lets spiffe://example.org/svc/cli call POST /v1/x on service "api"`} with input as r with data.meshguard.allowlist as list with data.meshguard.deny as fixture_deny
}

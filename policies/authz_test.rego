package meshguard.authz_test

import data.meshguard.authz

# req builds an input: caller service name, destination service, method, path.
req(caller, dest, method, path) := {
	"source": {"spiffe_id": sprintf("spiffe://example.org/svc/%s", [caller]), "trust_domain": "example.org", "service": caller},
	"destination": {"spiffe_id": sprintf("spiffe://example.org/svc/%s", [dest]), "service": dest},
	"request": {"method": method, "path": path, "query": {}, "headers": {}, "host": dest, "protocol": "HTTP/2.0"},
}

# --- allow: grants from data.json, by service name ---

test_web_reads_a_user if authz.allow with input as req("web", "users", "GET", "/users/42")

test_web_lists_users if authz.allow with input as req("web", "users", "GET", "/users")

test_web_allow_has_no_reasons if {
	count(authz.reasons) == 0 with input as req("web", "users", "GET", "/users/42")
}

# method/path per caller: web may only read users.
test_web_cannot_delete_a_user if {
	not authz.allow with input as req("web", "users", "DELETE", "/users/42")
	authz.reasons == {`no grant lets spiffe://example.org/svc/web call DELETE /users/42 on service "users"`} with input as req("web", "users", "DELETE", "/users/42")
}

# "*" in a path glob stops at "/".
test_web_glob_does_not_cross_segments if {
	not authz.allow with input as req("web", "users", "GET", "/users/42/billing")
}

# "**" crosses segments.
test_web_orders_double_star if authz.allow with input as req("web", "orders", "POST", "/orders/7/items/3")

# --- allow by SPIFFE ID ---

test_admin_by_spiffe_id_any_method if authz.allow with input as req("admin", "users", "DELETE", "/users/42")

# A service-name grant does not match a caller from another trust domain.
test_service_name_needs_same_trust_domain if {
	foreign := object.union(req("web", "users", "GET", "/users/42"), {"source": {"spiffe_id": "spiffe://evil.org/svc/web", "trust_domain": "evil.org", "service": "web"}})
	not authz.allow with input as foreign
	authz.reasons == {`caller spiffe://evil.org/svc/web has no grant on service "users"`} with input as foreign
}

# A SPIFFE-ID grant is exact: same service name, other trust domain, no match.
test_spiffe_id_grant_is_exact if {
	foreign := object.union(req("admin", "users", "GET", "/users/42"), {"source": {"spiffe_id": "spiffe://evil.org/svc/admin", "trust_domain": "evil.org", "service": "admin"}})
	not authz.allow with input as foreign
}

# --- header match ---

test_billing_write_needs_tenant_header if {
	r := req("billing", "users", "PUT", "/users/42/billing")
	not authz.allow with input as r
	authz.allow with input as object.union(r, {"request": {"headers": {"x-tenant": "acme"}}})
	not authz.allow with input as object.union(r, {"request": {"headers": {"x-tenant": "other"}}})
}

test_billing_read_needs_no_header if authz.allow with input as req("billing", "users", "GET", "/users/42/billing")

# --- default deny, with a reason for each case ---

test_unknown_destination_denied if {
	not authz.allow with input as req("web", "payments", "GET", "/")
	authz.reasons == {`destination service "payments" has no allow-list entry`} with input as req("web", "payments", "GET", "/")
}

test_unknown_caller_denied if {
	not authz.allow with input as req("stranger", "users", "GET", "/users/42")
	authz.reasons == {`caller spiffe://example.org/svc/stranger has no grant on service "users"`} with input as req("stranger", "users", "GET", "/users/42")
}

test_empty_input_denied if {
	not authz.allow with input as {}
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
	not authz.allow with input as r with data.meshguard.allowlist as list
	authz.reasons == {`no grant lets spiffe://example.org/svc/cli call POST /v1/x on service "api"`} with input as r with data.meshguard.allowlist as list
}

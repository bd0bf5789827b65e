package meshguard.authz_test

import data.meshguard.authz

# The allow-list and deny rules these tests run against. They belong to the
# tests, not to data.json: the agent runs the _test.rego files before every
# reload, and an operator's own data.json must never make the shipped rules'
# tests fail. (This fixture happens to equal the example data.json.)

fixture_allowlist := {
	"users": {
		"web": [
			{
				"methods": [
					"GET"
				],
				"paths": [
					"/users",
					"/users/*"
				]
			}
		],
		"spiffe://example.org/svc/admin": [
			{
				"methods": [
					"*"
				],
				"paths": [
					"/**"
				]
			}
		],
		"billing": [
			{
				"methods": [
					"GET"
				],
				"paths": [
					"/users/*/billing"
				]
			},
			{
				"methods": [
					"POST",
					"PUT"
				],
				"paths": [
					"/users/*/billing"
				],
				"headers": {
					"x-tenant": "acme"
				}
			}
		]
	},
	"orders": {
		"web": [
			{
				"methods": [
					"GET",
					"POST"
				],
				"paths": [
					"/orders",
					"/orders/**"
				]
			}
		]
	}
}

fixture_deny := [
	{
		"reason": "admin endpoints are reserved for the ops service",
		"paths": [
			"/admin",
			"/admin/**"
		],
		"except": [
			"spiffe://example.org/svc/ops"
		]
	},
	{
		"reason": "TRACE and CONNECT are never allowed through the mesh",
		"methods": [
			"TRACE",
			"CONNECT"
		]
	},
	{
		"reason": "internal endpoints are not reachable through the mesh",
		"paths": [
			"/internal/**"
		]
	}
]

# allowed and reasons_of evaluate the shipped rules on an input with the
# fixture's data.
allowed(r) if authz.allow with input as r with data.meshguard.allowlist as fixture_allowlist with data.meshguard.deny as fixture_deny

reasons_of(r) := rs if {
	rs := authz.reasons with input as r with data.meshguard.allowlist as fixture_allowlist with data.meshguard.deny as fixture_deny
}

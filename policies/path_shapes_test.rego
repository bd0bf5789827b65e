package meshguard.authz_test

import data.meshguard.authz

# path_pattern_matches tests the commonest glob shapes without glob.match
# (authz.rego); here each pattern, of every shape, is checked against
# glob.match itself on paths chosen around its edges.

shape_patterns := [
	"/", "/users", "/users/", "/a-b_c.d~e", "/a,b", "/a!b",
	"/**", "/admin/**", "/x/y/**", "/a-b/**", "/a,b/**",
	"/users/*", "/users/*/billing", "/a/**/b", "/a/*/**", "**", "*/**",
	"/a?", "/a[bc]", "/a[!b]", "/{a,b}/**", "/a\\*", "/a\\/**", "/a/\\**",
]

shape_paths := [
	"", "/", "//", "/a", "/ab", "/ac", "/a*", "/a/", "/a/b", "/a/q/b", "/a/c/d",
	"/users", "/users/", "/users/42", "/users/42/billing", "/usersx",
	"/admin", "/admin/", "/admin/x/y", "/adminx",
	"/x/y", "/x/y/", "/x/y/z", "/a-b", "/a-b/c", "/a-b_c.d~e", "/a,b", "/a,b/c", "/a!b",
]

pattern_matches(pattern, path) := true if {
	authz.path_pattern_matches(pattern) with input.request.path as path
} else := false

test_path_shapes_agree_with_glob_match if {
	disagreements := [[pattern, path] |
		some pattern in shape_patterns
		some path in shape_paths
		pattern_matches(pattern, path) != glob.match(pattern, ["/"], path)
	]
	count(disagreements) == 0
}

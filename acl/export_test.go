package acl

// ForceWide exposes forceWide to the external tests.
var ForceWide = &forceWide

package resources

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/tabbynet/tabby/acl/selector"
)

// ErrInvalid matches every *ValidationError with errors.Is.
var ErrInvalid = errors.New("invalid resource")

// FieldError is one problem with one field.
type FieldError struct {
	// Field is the JSON path of the field, such as "spec.blockSize" or
	// "spec.addresses[1].address".
	Field string
	// Msg says what is wrong, mentioning the bad value.
	Msg string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// ValidationError lists what is wrong with one object. Its message names the
// object and every field: IPPool "pool-a": spec.blockSize: 33 is out of range
// 20..32 for IPv4.
type ValidationError struct {
	Key    Key
	Fields []*FieldError
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString(e.Key.String())
	b.WriteString(": ")
	for i, f := range e.Fields {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(f.Error())
	}
	return b.String()
}

// Is reports whether target is ErrInvalid.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// fieldErrors collects FieldErrors for one object.
type fieldErrors struct {
	list []*FieldError
}

func (fe *fieldErrors) add(field, format string, args ...any) {
	fe.list = append(fe.list, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

// result returns nil or a *ValidationError for obj.
func (fe *fieldErrors) result(obj Resource) error {
	if len(fe.list) == 0 {
		return nil
	}
	return &ValidationError{Key: KeyOf(obj), Fields: fe.list}
}

// validateMeta checks the metadata shared by every kind.
func (fe *fieldErrors) validateMeta(obj Resource) {
	m := obj.Meta()
	fe.name("metadata.name", m.Name)
	if m.Namespace != "" {
		fe.add("metadata.namespace", "%s is cluster-scoped; namespace must be empty, not %q", obj.ResourceKind(), m.Namespace)
	}
	for k, v := range m.Labels {
		fe.label("metadata.labels", k, v)
	}
	for k := range m.Annotations {
		if !validQualifiedName(k) {
			fe.add("metadata.annotations", "key %q is not a valid annotation key", k)
		}
	}
}

// name checks a DNS-1123 subdomain.
func (fe *fieldErrors) name(field, s string) {
	if s == "" {
		fe.add(field, "is required")
		return
	}
	if !validSubdomain(s) {
		fe.add(field, "%q is not a valid name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters", s)
	}
}

// label checks a label key and value (Kubernetes rules).
func (fe *fieldErrors) label(field, k, v string) {
	if !validQualifiedName(k) {
		fe.add(field, "key %q is not a valid label key", k)
	}
	if len(v) > 63 || (v != "" && !validLabelValue(v)) {
		fe.add(field, "value %q of label %q is not a valid label value", v, k)
	}
}

// selector checks a selector expression; empty is allowed when allowEmpty.
func (fe *fieldErrors) selector(field, s string) {
	if s == "" {
		return
	}
	if _, err := selector.Parse(s); err != nil {
		fe.add(field, "%q: %v", s, err)
	}
}

// prefix parses a CIDR and requires it to be canonical (no host bits).
func (fe *fieldErrors) prefix(field, s string) (netip.Prefix, bool) {
	if s == "" {
		fe.add(field, "is required")
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		fe.add(field, "%q is not a valid CIDR", s)
		return netip.Prefix{}, false
	}
	if p.Addr().Zone() != "" || p.Addr().Is4In6() {
		fe.add(field, "%q is not a valid CIDR", s)
		return netip.Prefix{}, false
	}
	if m := p.Masked(); m != p {
		fe.add(field, "%s has host bits set (the network is %s)", s, m)
		return netip.Prefix{}, false
	}
	return p, true
}

// addr parses an IP address.
func (fe *fieldErrors) addr(field, s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.Is4In6() {
		fe.add(field, "%q is not a valid IP address", s)
		return netip.Addr{}, false
	}
	return a, true
}

// addrOrPrefix parses "ip" or "ip/len" (an interface address, host bits
// allowed), as Calico's node addresses are written.
func (fe *fieldErrors) addrOrPrefix(field, s string) (netip.Addr, bool) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Addr().Zone() != "" || p.Addr().Is4In6() {
			fe.add(field, "%q is not a valid IP address or address/prefix-length", s)
			return netip.Addr{}, false
		}
		return p.Addr(), true
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.Is4In6() {
		fe.add(field, "%q is not a valid IP address or address/prefix-length", s)
		return netip.Addr{}, false
	}
	return a, true
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// ValidDNSLabel reports whether s is a DNS-1123 label (a namespace name):
// 1..63 lowercase letters, digits and '-', starting and ending alphanumeric.
func ValidDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' {
			return false
		}
	}
	return true
}

// ValidDNSSubdomain reports whether s is a DNS-1123 subdomain (an object
// or node name): DNS labels joined by '.', at most 253 characters.
func ValidDNSSubdomain(s string) bool { return validSubdomain(s) }

// ValidLabelKey reports whether k is a valid label key: [prefix/]name.
func ValidLabelKey(k string) bool { return validQualifiedName(k) }

// ValidLabelValue reports whether v is a valid label value (empty is).
func ValidLabelValue(v string) bool { return v == "" || validLabelValue(v) }

// validSubdomain reports whether s is a DNS-1123 subdomain.
func validSubdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if !ValidDNSLabel(label) {
			return false
		}
	}
	return true
}

// validLabelValue: at most 63 characters, alphanumerics, '-', '_', '.',
// starting and ending alphanumeric (either case).
func validLabelValue(v string) bool {
	if len(v) > 63 {
		return false
	}
	an := func(c byte) bool { return isAlnum(c) || c >= 'A' && c <= 'Z' }
	if !an(v[0]) || !an(v[len(v)-1]) {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; !an(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// validQualifiedName: [prefix/]name, prefix a DNS subdomain, name a label
// value of at least one character.
func validQualifiedName(k string) bool {
	name := k
	if i := strings.LastIndexByte(k, '/'); i >= 0 {
		if !validSubdomain(k[:i]) {
			return false
		}
		name = k[i+1:]
	}
	return name != "" && validLabelValue(name)
}

// reserved ranges no pool may overlap.
var reservedPrefixes = []struct {
	p    netip.Prefix
	what string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "this-network"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// Overlaps reports whether prefixes a and b share an address.
func Overlaps(a, b netip.Prefix) bool {
	if a.Addr().Is4() != b.Addr().Is4() {
		return false
	}
	return a.Overlaps(b)
}

// Package selector parses and evaluates Calico-style label selectors.
//
// Grammar (whitespace is insignificant between tokens):
//
//	selector   = [ or ]                      (empty: matches everything)
//	or         = and { "||" and }
//	and        = unary { "&&" unary }
//	unary      = "!" unary | primary
//	primary    = "(" or ")" | "all()" | "global()" | "has(" key ")"
//	           | key ( "==" | "!=" ) value
//	           | key [ "not" ] "in" "{" [ value { "," value } ] "}"
//	           | key ( "contains" | "starts with" | "ends with" ) value
//	key        = 1*( ALPHA | DIGIT | "_" | "." | "/" | "-" )
//	value      = "'" *char "'" | `"` *char `"`
//
// Semantics follow Calico: k != v and k not in {…} are true when the label is
// absent; k in {} is false; all() matches every label set; global() matches
// endpoints that are not in a namespace (host endpoints, as a namespace
// selector) and is evaluated by the caller through Labels.Global.
//
// A parsed Selector is immutable and safe for concurrent use.
package selector

import (
	"fmt"
	"sort"
	"strings"
)

// Op is a selector node kind.
type Op uint8

// Node kinds.
const (
	OpAll Op = iota
	OpGlobal
	OpHas
	OpEq
	OpNe
	OpIn
	OpNotIn
	OpContains
	OpStartsWith
	OpEndsWith
	OpNot
	OpAnd
	OpOr
)

// Selector is a parsed selector expression.
type Selector struct {
	op     Op
	key    string
	value  string
	values []string // OpIn/OpNotIn: sorted, unique
	kids   []*Selector
	src    string // canonical text
}

// Labels is what a selector is evaluated against.
type Labels struct {
	// Map is the label set.
	Map map[string]string
	// Global is true for an entity outside any namespace (global()).
	Global bool
}

// All is the selector that matches everything.
var All = &Selector{op: OpAll, src: "all()"}

// MaxLen is the longest selector text Parse accepts.
const MaxLen = 64 << 10

// maxDepth bounds nesting so hostile input cannot exhaust the stack.
const maxDepth = 100

// Error is a parse error with the byte offset where it was found.
type Error struct {
	Offset int
	Msg    string
}

func (e *Error) Error() string { return fmt.Sprintf("selector: %s at offset %d", e.Msg, e.Offset) }

// Parse parses a selector. The empty (or all-blank) selector is All.
func Parse(s string) (*Selector, error) {
	if len(s) > MaxLen {
		return nil, &Error{Offset: MaxLen, Msg: "selector too long"}
	}
	p := parser{s: s}
	p.skip()
	if p.pos == len(s) {
		return All, nil
	}
	n, err := p.or(0)
	if err != nil {
		return nil, err
	}
	p.skip()
	if p.pos != len(s) {
		return nil, p.errf("unexpected %q", p.rest(8))
	}
	return n, nil
}

// MustParse is Parse for constants in tests and programs; it panics on error.
func MustParse(s string) *Selector {
	sel, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return sel
}

// String returns the canonical text of the selector: Parse(sel.String())
// yields an equal selector.
func (s *Selector) String() string { return s.src }

// IsAll reports whether the selector is all() (matches every label set).
func (s *Selector) IsAll() bool { return s.op == OpAll }

// Matches evaluates the selector against a label set.
func (s *Selector) Matches(l Labels) bool {
	switch s.op {
	case OpAll:
		return true
	case OpGlobal:
		return l.Global
	case OpHas:
		_, ok := l.Map[s.key]
		return ok
	case OpEq:
		v, ok := l.Map[s.key]
		return ok && v == s.value
	case OpNe:
		v, ok := l.Map[s.key]
		return !ok || v != s.value
	case OpIn:
		v, ok := l.Map[s.key]
		return ok && contains(s.values, v)
	case OpNotIn:
		v, ok := l.Map[s.key]
		return !ok || !contains(s.values, v)
	case OpContains:
		v, ok := l.Map[s.key]
		return ok && strings.Contains(v, s.value)
	case OpStartsWith:
		v, ok := l.Map[s.key]
		return ok && strings.HasPrefix(v, s.value)
	case OpEndsWith:
		v, ok := l.Map[s.key]
		return ok && strings.HasSuffix(v, s.value)
	case OpNot:
		return !s.kids[0].Matches(l)
	case OpAnd:
		for _, k := range s.kids {
			if !k.Matches(l) {
				return false
			}
		}
		return true
	case OpOr:
		for _, k := range s.kids {
			if k.Matches(l) {
				return true
			}
		}
		return false
	}
	return false
}

// MatchesMap evaluates the selector against a namespaced label set.
func (s *Selector) MatchesMap(m map[string]string) bool { return s.Matches(Labels{Map: m}) }

func contains(sorted []string, v string) bool {
	i := sort.SearchStrings(sorted, v)
	return i < len(sorted) && sorted[i] == v
}

type parser struct {
	s   string
	pos int
}

func (p *parser) errf(format string, args ...any) error {
	return &Error{Offset: p.pos, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) rest(n int) string {
	r := p.s[p.pos:]
	if len(r) > n {
		r = r[:n]
	}
	return r
}

func (p *parser) skip() {
	for p.pos < len(p.s) {
		switch p.s[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// lit consumes the literal t (after blanks) if present.
func (p *parser) lit(t string) bool {
	p.skip()
	if strings.HasPrefix(p.s[p.pos:], t) {
		p.pos += len(t)
		return true
	}
	return false
}

// word consumes the keyword w if it stands alone (not a prefix of a key).
func (p *parser) word(w string) bool {
	p.skip()
	if !strings.HasPrefix(p.s[p.pos:], w) {
		return false
	}
	end := p.pos + len(w)
	if end < len(p.s) && isKeyChar(p.s[end]) {
		return false
	}
	p.pos = end
	return true
}

func isKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '.' || c == '/' || c == '-'
}

func (p *parser) or(depth int) (*Selector, error) {
	if depth > maxDepth {
		return nil, p.errf("selector nested too deeply")
	}
	first, err := p.and(depth)
	if err != nil {
		return nil, err
	}
	kids := []*Selector{first}
	for p.lit("||") {
		n, err := p.and(depth)
		if err != nil {
			return nil, err
		}
		kids = append(kids, n)
	}
	return combine(OpOr, kids), nil
}

func (p *parser) and(depth int) (*Selector, error) {
	first, err := p.unary(depth)
	if err != nil {
		return nil, err
	}
	kids := []*Selector{first}
	for p.lit("&&") {
		n, err := p.unary(depth)
		if err != nil {
			return nil, err
		}
		kids = append(kids, n)
	}
	return combine(OpAnd, kids), nil
}

func combine(op Op, kids []*Selector) *Selector {
	if len(kids) == 1 {
		return kids[0]
	}
	parts := make([]string, len(kids))
	for i, k := range kids {
		parts[i] = k.src
		if k.op == OpOr || (op == OpOr && k.op == OpAnd) {
			parts[i] = "(" + k.src + ")"
		}
	}
	sep := " && "
	if op == OpOr {
		sep = " || "
	}
	return &Selector{op: op, kids: kids, src: strings.Join(parts, sep)}
}

func (p *parser) unary(depth int) (*Selector, error) {
	if depth > maxDepth {
		return nil, p.errf("selector nested too deeply")
	}
	p.skip()
	if p.pos < len(p.s) && p.s[p.pos] == '!' && !strings.HasPrefix(p.s[p.pos:], "!=") {
		p.pos++
		k, err := p.unary(depth + 1)
		if err != nil {
			return nil, err
		}
		src := "!" + k.src
		if k.op == OpAnd || k.op == OpOr {
			src = "!(" + k.src + ")"
		}
		return &Selector{op: OpNot, kids: []*Selector{k}, src: src}, nil
	}
	return p.primary(depth)
}

func (p *parser) primary(depth int) (*Selector, error) {
	p.skip()
	if p.lit("(") {
		n, err := p.or(depth + 1)
		if err != nil {
			return nil, err
		}
		if !p.lit(")") {
			return nil, p.errf("missing )")
		}
		return n, nil
	}
	if p.fn("all") {
		return All, nil
	}
	if p.fn("global") {
		return &Selector{op: OpGlobal, src: "global()"}, nil
	}
	save := p.pos
	if p.word("has") && p.lit("(") {
		k, err := p.key()
		if err != nil {
			return nil, err
		}
		if !p.lit(")") {
			return nil, p.errf("missing ) after has(%s", k)
		}
		return &Selector{op: OpHas, key: k, src: "has(" + k + ")"}, nil
	}
	p.pos = save
	k, err := p.key()
	if err != nil {
		return nil, err
	}
	switch {
	case p.lit("=="):
		return p.valueOp(OpEq, k, "==")
	case p.lit("!="):
		return p.valueOp(OpNe, k, "!=")
	case p.word("contains"):
		return p.valueOp(OpContains, k, "contains")
	case p.word("starts"):
		if !p.word("with") {
			return nil, p.errf("expected \"with\" after \"starts\"")
		}
		return p.valueOp(OpStartsWith, k, "starts with")
	case p.word("ends"):
		if !p.word("with") {
			return nil, p.errf("expected \"with\" after \"ends\"")
		}
		return p.valueOp(OpEndsWith, k, "ends with")
	case p.word("in"):
		return p.set(OpIn, k)
	case p.word("not"):
		if !p.word("in") {
			return nil, p.errf("expected \"in\" after \"not\"")
		}
		return p.set(OpNotIn, k)
	}
	return nil, p.errf("expected an operator after label %q", k)
}

// fn consumes "name()" (blanks allowed inside).
func (p *parser) fn(name string) bool {
	save := p.pos
	if p.word(name) && p.lit("(") && p.lit(")") {
		return true
	}
	p.pos = save
	return false
}

func (p *parser) key() (string, error) {
	p.skip()
	start := p.pos
	for p.pos < len(p.s) && isKeyChar(p.s[p.pos]) {
		p.pos++
	}
	if p.pos == start {
		return "", p.errf("expected a label key")
	}
	if p.pos-start > 512 {
		return "", p.errf("label key too long")
	}
	return p.s[start:p.pos], nil
}

func (p *parser) value() (string, error) {
	p.skip()
	if p.pos >= len(p.s) || (p.s[p.pos] != '\'' && p.s[p.pos] != '"') {
		return "", p.errf("expected a quoted value")
	}
	q := p.s[p.pos]
	end := strings.IndexByte(p.s[p.pos+1:], q)
	if end < 0 {
		return "", p.errf("unterminated string")
	}
	v := p.s[p.pos+1 : p.pos+1+end]
	p.pos += end + 2
	return v, nil
}

func quote(v string) string {
	if strings.IndexByte(v, '\'') >= 0 {
		return `"` + v + `"`
	}
	return "'" + v + "'"
}

func (p *parser) valueOp(op Op, k, text string) (*Selector, error) {
	v, err := p.value()
	if err != nil {
		return nil, err
	}
	return &Selector{op: op, key: k, value: v, src: k + " " + text + " " + quote(v)}, nil
}

func (p *parser) set(op Op, k string) (*Selector, error) {
	if !p.lit("{") {
		return nil, p.errf("expected {")
	}
	var vals []string
	if !p.lit("}") {
		for {
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			vals = append(vals, v)
			if p.lit("}") {
				break
			}
			if !p.lit(",") {
				return nil, p.errf("expected , or }")
			}
		}
	}
	sort.Strings(vals)
	vals = uniq(vals)
	q := make([]string, len(vals))
	for i, v := range vals {
		q[i] = quote(v)
	}
	text := " in {"
	if op == OpNotIn {
		text = " not in {"
	}
	return &Selector{op: op, key: k, values: vals, src: k + text + strings.Join(q, ", ") + "}"}, nil
}

func uniq(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

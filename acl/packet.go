package acl

// Family is an address family.
type Family uint8

// Address families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// Packet is what the classifier and conntrack look at. The pipeline fills it
// from datapath.Parsed field by field (the names are the same).
type Packet struct {
	// Family is IPv4 or IPv6; Src4/Dst4 or Src6/Dst6 hold the addresses.
	Family     Family
	Proto      uint8
	TCPFlags   uint8
	Src4, Dst4 uint32
	Src6, Dst6 [16]byte
	// SrcPort and DstPort are TCP/UDP/SCTP ports; for ICMP DstPort is
	// type<<8|code and SrcPort the echo identifier.
	SrcPort, DstPort uint16
	// Quoted is, for an ICMP error (destination unreachable, time
	// exceeded, parameter problem, packet too big), the header of the
	// packet it quotes (see ParseICMPError); nil otherwise.
	Quoted *Packet
}

// Verdict is the outcome of policy for a packet. The zero value denies.
type Verdict uint8

// Verdicts.
const (
	Denied Verdict = iota
	Allowed
)

func (v Verdict) String() string {
	if v == Allowed {
		return "allow"
	}
	return "deny"
}

// MatchKind says what decided a Result.
type MatchKind uint8

// Match kinds.
const (
	// MatchNone: not evaluated (no endpoint on that side).
	MatchNone MatchKind = iota
	// MatchRule: a rule with action Allow or Deny (Result.Policy and
	// Result.Rule name it).
	MatchRule
	// MatchEndOfTier: no rule of a tier that applies to the endpoint
	// decided; the tier's default action (Deny) did (Result.Tier).
	MatchEndOfTier
	// MatchNoPolicy: no policy applies to the endpoint in this direction:
	// workload endpoints allow (Kubernetes semantics), host endpoints deny.
	MatchNoPolicy
	// MatchProfile: every applicable tier passed; the endpoint's profile
	// decided as for MatchNoPolicy.
	MatchProfile
	// MatchFailsafe: a host endpoint's failsafe port (Result.Rule indexes
	// Options.FailsafeInbound or FailsafeOutbound).
	MatchFailsafe
)

var matchNames = [...]string{"none", "rule", "end-of-tier", "no-policy", "profile", "failsafe"}

func (k MatchKind) String() string {
	return nameAt(matchNames[:], k)
}

// nameAt returns names[i], or "?" for an index the table does not cover,
// so that String methods and diagnostics never panic on a bad value.
func nameAt[I ~uint8 | ~uint16 | ~uint32](names []string, i I) string {
	if uint64(i) < uint64(len(names)) {
		return names[i]
	}
	return "?"
}

// Result is the outcome of one classification: the verdict and what
// matched. Describe it with Compiled.Describe.
type Result struct {
	Verdict Verdict
	Kind    MatchKind
	// Tier is the tier slot (MatchRule, MatchEndOfTier).
	Tier uint16
	// Rule is the rule's index in its policy's rules for the direction
	// (MatchRule) or the failsafe index (MatchFailsafe).
	Rule uint16
	// Policy is the policy slot (MatchRule).
	Policy uint32
	// Logs identifies the Log rules that matched before the decision (0:
	// none); Compiled.LogRules lists them.
	Logs uint32
}

// RuleRef names a rule for humans and tests.
type RuleRef struct {
	Tier   string
	Policy string // policy ID()
	Dir    Direction
	Index  int
}

// Match is a Result spelled out.
type Match struct {
	Verdict Verdict
	Kind    MatchKind
	// Tier is set for MatchRule and MatchEndOfTier; Policy and Index for
	// MatchRule; Index for MatchFailsafe.
	Tier   string
	Policy string
	Dir    Direction
	Index  int
	// Logs are the Log rules hit before the decision, in order.
	Logs []RuleRef
}

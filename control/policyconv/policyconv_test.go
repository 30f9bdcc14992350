package policyconv

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/tabbynet/tabby/acl"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The cluster: namespaces a (team x) and b (team y); pods web, client, other
// in a, client in b. web declares http=8080/TCP and dns=53/UDP.
var (
	namespaces = []acl.Namespace{{Name: "a", Labels: map[string]string{"team": "x"}}, {Name: "b", Labels: map[string]string{"team": "y"}}}
	pods       = []acl.Endpoint{
		{Name: "web", Namespace: "a", Labels: map[string]string{"app": "web"}, IPs: addrs("10.0.0.1"),
			Ports: []acl.NamedPort{{Name: "http", Protocol: acl.ProtoTCP, Port: 8080}, {Name: "dns", Protocol: acl.ProtoUDP, Port: 53}}},
		{Name: "client", Namespace: "a", Labels: map[string]string{"app": "client"}, IPs: addrs("10.0.0.2")},
		{Name: "other", Namespace: "a", Labels: map[string]string{"app": "other"}, IPs: addrs("10.0.0.3")},
		{Name: "client", Namespace: "b", Labels: map[string]string{"app": "client"}, IPs: addrs("10.0.1.2")},
	}
)

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, netip.MustParseAddr(x))
	}
	return out
}

type flow struct {
	src, dst string
	proto    uint8
	port     uint16
	allowed  bool
}

func sel(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func tcpPort(p int32) networkingv1.NetworkPolicyPort {
	v := intstr.FromInt32(p)
	return networkingv1.NetworkPolicyPort{Port: &v}
}

func np(name string, spec networkingv1.NetworkPolicySpec) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "a"}, Spec: spec}
}

func TestSemantics(t *testing.T) {
	udp := corev1.ProtocolUDP
	named := intstr.FromString("http")
	dnsName := intstr.FromString("dns")
	end := int32(8100)
	p8000 := intstr.FromInt32(8000)
	webIngress := func(rules ...networkingv1.NetworkPolicyIngressRule) networkingv1.NetworkPolicySpec {
		return networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "web"), Ingress: rules}
	}
	tests := []struct {
		name     string
		policies []*networkingv1.NetworkPolicy
		flows    []flow
	}{
		{"no policy allows everything", nil, []flow{
			{"10.0.0.2", "10.0.0.1", 6, 80, true}, {"10.0.1.2", "10.0.0.1", 17, 9, true}, {"8.8.8.8", "10.0.0.1", 6, 1, true},
		}},
		{"selected pod is isolated for ingress only", []*networkingv1.NetworkPolicy{np("p", webIngress(networkingv1.NetworkPolicyIngressRule{
			From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "client")}}, Ports: []networkingv1.NetworkPolicyPort{tcpPort(80)}}))},
			[]flow{
				{"10.0.0.2", "10.0.0.1", 6, 80, true},  // client in same namespace
				{"10.0.0.2", "10.0.0.1", 6, 81, false}, // other port
				{"10.0.0.2", "10.0.0.1", 17, 80, false},
				{"10.0.0.3", "10.0.0.1", 6, 80, false}, // other pod
				{"10.0.1.2", "10.0.0.1", 6, 80, false}, // client in another namespace: podSelector is namespaced
				{"10.0.0.1", "10.0.0.3", 6, 80, true},  // web's egress is not isolated
				{"10.0.0.3", "10.0.0.2", 6, 80, true},  // unselected pod
			}},
		{"egress-only default deny", []*networkingv1.NetworkPolicy{np("p", networkingv1.NetworkPolicySpec{
			PodSelector: *sel("app", "web"), PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}})},
			[]flow{{"10.0.0.1", "10.0.0.2", 6, 80, false}, {"10.0.0.1", "1.1.1.1", 17, 53, false}, {"10.0.0.2", "10.0.0.1", 6, 80, true}}},
		{"empty podSelector selects every pod of the namespace only", []*networkingv1.NetworkPolicy{np("p", networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{}, PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}})},
			[]flow{{"10.0.0.2", "10.0.0.1", 6, 80, false}, {"10.0.0.1", "10.0.0.3", 6, 80, false}, {"10.0.0.1", "10.0.1.2", 6, 80, true}}},
		{"policies are a union", []*networkingv1.NetworkPolicy{
			np("p1", webIngress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "client")}},
				Ports: []networkingv1.NetworkPolicyPort{tcpPort(80)}})),
			np("p2", webIngress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}},
				Ports: []networkingv1.NetworkPolicyPort{tcpPort(443)}})),
		}, []flow{{"10.0.0.2", "10.0.0.1", 6, 80, true}, {"10.0.0.3", "10.0.0.1", 6, 443, true}, {"10.0.0.3", "10.0.0.1", 6, 80, false},
			{"10.0.1.2", "10.0.0.1", 6, 443, false}}},
		{"namespaceSelector {} is every namespace", []*networkingv1.NetworkPolicy{np("p", webIngress(networkingv1.NetworkPolicyIngressRule{
			From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}}))},
			[]flow{{"10.0.1.2", "10.0.0.1", 6, 80, true}, {"10.0.0.3", "10.0.0.1", 17, 5, true}, {"8.8.8.8", "10.0.0.1", 6, 80, false}}},
		{"namespaceSelector and podSelector together", []*networkingv1.NetworkPolicy{np("p", webIngress(networkingv1.NetworkPolicyIngressRule{
			From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team", "y"), PodSelector: sel("app", "client")}}}))},
			[]flow{{"10.0.1.2", "10.0.0.1", 6, 80, true}, {"10.0.0.2", "10.0.0.1", 6, 80, false}}},
		{"ipBlock with except", []*networkingv1.NetworkPolicy{np("p", webIngress(networkingv1.NetworkPolicyIngressRule{
			From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/16", Except: []string{"10.0.1.0/24"}}}}}))},
			[]flow{{"10.0.0.2", "10.0.0.1", 6, 80, true}, {"10.0.1.2", "10.0.0.1", 6, 80, false}, {"10.0.255.255", "10.0.0.1", 6, 80, true},
				{"10.1.0.0", "10.0.0.1", 6, 80, false}}},
		{"endPort range", []*networkingv1.NetworkPolicy{np("p", webIngress(networkingv1.NetworkPolicyIngressRule{
			Ports: []networkingv1.NetworkPolicyPort{{Port: &p8000, EndPort: &end}}}))},
			[]flow{{"10.0.0.2", "10.0.0.1", 6, 7999, false}, {"10.0.0.2", "10.0.0.1", 6, 8000, true}, {"10.0.0.2", "10.0.0.1", 6, 8100, true},
				{"10.0.0.2", "10.0.0.1", 6, 8101, false}}},
		{"named ports resolve on the destination pod", []*networkingv1.NetworkPolicy{np("p", webIngress(networkingv1.NetworkPolicyIngressRule{
			Ports: []networkingv1.NetworkPolicyPort{{Port: &named}, {Protocol: &udp, Port: &dnsName}}}))},
			[]flow{{"10.0.0.2", "10.0.0.1", 6, 8080, true}, {"10.0.0.2", "10.0.0.1", 6, 80, false}, {"10.0.0.2", "10.0.0.1", 17, 53, true},
				{"10.0.0.2", "10.0.0.1", 6, 53, false}}},
		{"egress named port to a peer", []*networkingv1.NetworkPolicy{np("p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "client"),
			Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web")}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &named}}}}})},
			[]flow{{"10.0.0.2", "10.0.0.1", 6, 8080, true}, {"10.0.0.2", "10.0.0.3", 6, 8080, false}, {"10.0.0.2", "10.0.0.1", 6, 80, false}}},
		{"empty ingress rule allows all", []*networkingv1.NetworkPolicy{np("p", webIngress(networkingv1.NetworkPolicyIngressRule{}))},
			[]flow{{"8.8.8.8", "10.0.0.1", 132, 1, true}}},
		{"UDP only", []*networkingv1.NetworkPolicy{np("p", webIngress(networkingv1.NetworkPolicyIngressRule{
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp}}}))},
			[]flow{{"10.0.0.2", "10.0.0.1", 17, 9999, true}, {"10.0.0.2", "10.0.0.1", 6, 9999, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := acl.State{Namespaces: namespaces, Endpoints: pods}
			for _, k := range tt.policies {
				p, err := NetworkPolicy(k)
				if err != nil {
					t.Fatal(err)
				}
				st.Policies = append(st.Policies, p)
			}
			ref, err := acl.NewReference(&st, acl.Options{})
			if err != nil {
				t.Fatal(err)
			}
			cp, err := acl.Compile(&st, acl.Options{})
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range tt.flows {
				s, d := netip.MustParseAddr(f.src).As4(), netip.MustParseAddr(f.dst).As4()
				p := acl.Packet{Family: acl.IPv4, Proto: f.proto, DstPort: f.port, SrcPort: 40000,
					Src4: uint32(s[0])<<24 | uint32(s[1])<<16 | uint32(s[2])<<8 | uint32(s[3]),
					Dst4: uint32(d[0])<<24 | uint32(d[1])<<16 | uint32(d[2])<<8 | uint32(d[3])}
				v, _, _ := ref.Evaluate(&p)
				if got := v == acl.Allowed; got != f.allowed {
					t.Errorf("%s -> %s proto %d port %d: allowed %v, want %v", f.src, f.dst, f.proto, f.port, got, f.allowed)
				}
				if c := cp.Check(&p); c.Verdict != v {
					t.Errorf("%s -> %s: compiled %v, reference %v", f.src, f.dst, c.Verdict, v)
				}
			}
		})
	}
}

func TestLabelSelector(t *testing.T) {
	got, err := LabelSelector(&metav1.LabelSelector{MatchLabels: map[string]string{"b": "2", "a": "1"},
		MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "t", Operator: metav1.LabelSelectorOpIn, Values: []string{"x", "y"}},
			{Key: "u", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"z"}},
			{Key: "v", Operator: metav1.LabelSelectorOpExists},
			{Key: "k8s.io/w", Operator: metav1.LabelSelectorOpDoesNotExist},
		}})
	want := "a == '1' && b == '2' && t in {'x', 'y'} && u not in {'z'} && has(v) && !has(k8s.io/w)"
	if err != nil || got != want {
		t.Fatalf("got %q, %v\nwant %q", got, err, want)
	}
	if s, _ := LabelSelector(&metav1.LabelSelector{}); s != "all()" {
		t.Fatalf("empty selector: %q", s)
	}
}

func TestErrors(t *testing.T) {
	named := intstr.FromString("http")
	end := int32(10)
	p20 := intstr.FromInt32(20)
	bad := []struct {
		name  string
		spec  networkingv1.NetworkPolicySpec
		field string
	}{
		{"bad cidr", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/33"}}}}}}, "spec.ingress[0].from[0].ipBlock.cidr"},
		{"except outside", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/16", Except: []string{"11.0.0.0/24"}}}}}}}, "spec.ingress[0].from[0].ipBlock.except[0]"},
		{"endPort before port", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: &p20, EndPort: &end}}}}}, "spec.ingress[0].ports[0].endPort"},
		{"endPort with named port", networkingv1.NetworkPolicySpec{Egress: []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: &named, EndPort: &end}}}}}, "spec.egress[0].ports[0].endPort"},
		{"bad operator", networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Near"}}}}, "spec.podSelector"},
	}
	for _, tt := range bad {
		_, err := NetworkPolicy(np("bad", tt.spec))
		var e *Error
		if !errors.As(err, &e) || e.Field != tt.field || !strings.Contains(err.Error(), `"a/bad"`) {
			t.Errorf("%s: error %v, want field %s", tt.name, err, tt.field)
		}
	}
}

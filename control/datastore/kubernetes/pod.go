package kubernetes

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"

	"github.com/tabbynet/tabby/control/resources"
)

// PodEndpoint is a pod as a workload endpoint: what policy and routing
// need of it.
type PodEndpoint struct {
	Namespace string
	Name      string
	UID       string
	// Node is the node the pod runs on (spec.nodeName).
	Node string
	// Labels are the pod's labels (shared with the informer's cache: do not
	// modify).
	Labels map[string]string
	// ServiceAccount is the pod's service account name.
	ServiceAccount string
	// IPs are the pod's addresses (status.podIPs, or status.podIP).
	IPs []netip.Addr
	// Ports are the named ports of its containers, for policies that name
	// ports.
	Ports []resources.EndpointPort
	// ResourceVersion is the pod's.
	ResourceVersion string
}

// PodEndpointOf returns pod as a workload endpoint, or false when it is
// not one: it uses the host's network, has no address yet, or has
// finished (phase Succeeded or Failed; its address may already be another
// pod's).
func PodEndpointOf(pod *corev1.Pod) (PodEndpoint, bool) {
	if pod.Spec.HostNetwork || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return PodEndpoint{}, false
	}
	var ips []netip.Addr
	for _, p := range pod.Status.PodIPs {
		if a, err := netip.ParseAddr(p.IP); err == nil {
			ips = append(ips, a.Unmap())
		}
	}
	if len(ips) == 0 && pod.Status.PodIP != "" {
		if a, err := netip.ParseAddr(pod.Status.PodIP); err == nil {
			ips = append(ips, a.Unmap())
		}
	}
	if len(ips) == 0 {
		return PodEndpoint{}, false
	}
	ep := PodEndpoint{
		Namespace:       pod.Namespace,
		Name:            pod.Name,
		UID:             string(pod.UID),
		Node:            pod.Spec.NodeName,
		Labels:          pod.Labels,
		ServiceAccount:  pod.Spec.ServiceAccountName,
		IPs:             ips,
		ResourceVersion: pod.ResourceVersion,
	}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == "" {
				continue
			}
			proto := string(p.Protocol)
			if proto == "" {
				proto = string(corev1.ProtocolTCP)
			}
			ep.Ports = append(ep.Ports, resources.EndpointPort{Name: p.Name, Protocol: proto, Port: uint16(p.ContainerPort)})
		}
	}
	return ep, true
}

// Command tabby-cni is Tabby's CNI plugin, installed as `tabby` in the CNI
// bin directory (see package control/cni).
package main

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/tabbynet/tabby/control/cni"
)

// Version is set at build time (-ldflags "-X main.Version=...").
var Version = "dev"

func main() {
	p := &cni.Plugin{Stderr: os.Stderr}
	skel.PluginMainFuncs(p.Funcs(), version.All, "CNI plugin tabby "+Version)
}

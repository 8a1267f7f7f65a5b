package allowlist_test

import (
	"fmt"
	"net/netip"

	"github.com/postern/postern/allowlist"
)

func ExampleList_Decide() {
	list, err := allowlist.Compile(
		[]allowlist.RuleSpec{
			{Host: "*.corp.example", Ports: []string{"443"}},
			{CIDR: "10.20.0.0/16", Ports: []string{"443", "8000-8100"}},
		},
		[]allowlist.RuleSpec{{CIDR: "10.20.5.0/24"}},
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, target := range []struct {
		host string
		port int
	}{
		{"GitLab.Corp.Example.", 443},
		{"corp.example", 443},
		{"10.20.5.7", 443},
		{"169.254.169.254", 80},
		{"0177.0.0.1", 443},
	} {
		d := list.Decide(target.host, target.port)
		fmt.Printf("%s:%d %s (%s)\n", target.host, target.port, d.Verdict, d.Rule)
	}
	// A name that Decide allowed is resolved by the caller; every address is
	// checked again before it is dialed.
	fmt.Println(list.CheckAddr(netip.MustParseAddr("127.0.0.1"), 443).Verdict)
	// Output:
	// GitLab.Corp.Example.:443 allowed (allow host=*.corp.example ports=443)
	// corp.example:443 missing ()
	// 10.20.5.7:443 blocked (deny cidr=10.20.5.0/24 ports=*)
	// 169.254.169.254:80 blocked (always-blocked link-local)
	// 0177.0.0.1:443 bad_target ()
	// blocked
}

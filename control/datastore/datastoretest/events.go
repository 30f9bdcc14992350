package datastoretest

import (
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/datastore"
)

// EventTimeout bounds every wait for an event: a test that waits longer
// fails instead of hanging. It is a guard, not a speed requirement.
const EventTimeout = 15 * time.Second

// Receive returns the next value from ch (a watcher's or a stream's
// events), failing the test if ch is closed or nothing arrives within
// EventTimeout.
func Receive[E any](t testing.TB, ch <-chan E) E {
	t.Helper()
	timer := time.NewTimer(EventTimeout)
	defer timer.Stop()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("events closed")
		}
		return ev
	case <-timer.C:
		t.Fatalf("no event within %s", EventTimeout)
	}
	panic("unreachable")
}

// Next returns w's next event (see Receive).
func Next(t testing.TB, w datastore.Watcher) datastore.Event {
	t.Helper()
	return Receive(t, w.Events())
}

// WaitClosed reads w's events until w closes them, failing the test if
// that takes longer than EventTimeout.
func WaitClosed(t testing.TB, w datastore.Watcher) {
	t.Helper()
	timer := time.NewTimer(EventTimeout)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-w.Events():
			if !ok {
				return
			}
		case <-timer.C:
			t.Fatalf("events still open after %s", EventTimeout)
		}
	}
}

// Describe formats an object event as "Added n1 zone=a", another as its
// type.
func Describe(ev datastore.Event) string {
	s := ev.Type.String()
	if ev.Object != nil {
		s += " " + ev.Object.Meta().Name
		if z := ev.Object.Meta().Labels["zone"]; z != "" {
			s += " zone=" + z
		}
	}
	return s
}

// Until collects w's object events, described and sorted, up to the next
// event of type typ; Error events, whose number depends on timing, are
// logged and skipped. Every object event's revision is checked
// (CheckRevision).
func Until(t testing.TB, w datastore.Watcher, typ datastore.EventType) []string {
	t.Helper()
	var out []string
	for {
		ev := Next(t, w)
		switch {
		case ev.Type == typ:
			sort.Strings(out)
			return out
		case ev.Type == datastore.Error:
			t.Logf("error event: %v", ev.Err)
		case ev.Object == nil:
			t.Fatalf("unexpected %s event", ev.Type)
		default:
			CheckRevision(t, ev)
			out = append(out, Describe(ev))
		}
	}
}

// CheckRevision reports an error when an object event's Revision is not
// its object's resourceVersion (for Deleted, the version of the
// deletion).
func CheckRevision(t testing.TB, ev datastore.Event) {
	t.Helper()
	if ev.Object != nil && ev.Revision != ev.Object.Meta().ResourceVersion {
		t.Errorf("%s: event revision %s, object %s", Describe(ev), ev.Revision, ev.Object.Meta().ResourceVersion)
	}
}

// Equal fails the test unless got (sorted, as from Until) holds exactly
// want, in any order.
func Equal(t testing.TB, got []string, want ...string) {
	t.Helper()
	sort.Strings(want)
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Fatalf("events\n got: %s\nwant: %s", strings.Join(got, "; "), strings.Join(want, "; "))
	}
}

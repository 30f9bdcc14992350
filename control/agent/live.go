package agent

import (
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"sync"
)

// liveConfig re-resolves the configuration when an AgentConfiguration
// changes. The log level applies at once; other keys take effect at the
// next start (a warning says so).
type liveConfig struct {
	mu      sync.Mutex
	top     []*ConfigLayer // env, flags, file
	global  *AgentConfiguration
	node    *AgentConfiguration
	nodeKey string
	current Config
	level   *slog.LevelVar
}

func (lc *liveConfig) update(name string, ac *AgentConfiguration, log *slog.Logger) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if name == "default" {
		lc.global = ac
	} else {
		lc.node = ac
	}
	layers := append([]*ConfigLayer(nil), lc.top...)
	for _, a := range []*AgentConfiguration{lc.node, lc.global} {
		l, err := DatastoreLayer(a)
		if err != nil {
			log.Error("agent configuration rejected", "err", err)
			return
		}
		layers = append(layers, l)
	}
	c, err := ResolveConfig(layers...)
	if err != nil {
		log.Error("agent configuration rejected; keeping the current one", "err", err)
		return
	}
	if c.LogLevel != lc.current.LogLevel && lc.level != nil {
		lc.level.Set(c.LogLevel)
		log.Info("log level changed", "level", c.LogLevel)
	}
	old := lc.current
	old.LogLevel, old.Sources = c.LogLevel, c.Sources
	if !reflect.DeepEqual(old, c) {
		log.Warn("agent configuration changed in the datastore; restart the agent to apply it", "object", name)
	}
	lc.current.LogLevel = c.LogLevel
}

// NewLogger returns the logger the configuration asks for, writing to w,
// and the level variable that later changes adjust.
func NewLogger(w io.Writer, c *Config) (*slog.Logger, *slog.LevelVar) {
	lv := new(slog.LevelVar)
	lv.Set(c.LogLevel)
	opts := &slog.HandlerOptions{Level: lv}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), lv
	}
	return slog.New(slog.NewTextHandler(w, opts)), lv
}

// describeSources formats where the configuration's keys came from.
func describeSources(c *Config) string {
	return fmt.Sprint(c.Sources)
}

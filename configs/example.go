package configs

import _ "embed"

// Example is the commented example cluster file installed as /etc/wgk3s.yaml.
//
//go:embed wgk3s.yaml
var Example []byte

package supervisor

import "syscall"

// childAttr makes the kernel kill k3s when the thread that started it
// exits (the appliance died).
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// Where and as whom to open an SSH connection: what SkyPilot's SSH config (or a deployment's state)
// says about one host. Pure data, shared by rank assignment and the SSH adapter.

export interface SshTarget {
  alias: string;
  hostName: string;
  port: number;
  user: string;
  identityFile: string; // already tilde-expanded (expandTilde in core/ssh-config)
  /** SkyPilot's ProxyCommand for this host (gcp.ssh_proxy_command, Docker images), %-tokens unexpanded. */
  proxyCommand?: string | undefined;
}

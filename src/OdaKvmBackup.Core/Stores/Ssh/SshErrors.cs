using System.Text.RegularExpressions;

namespace OdaKvmBackup.Core.Stores.Ssh;

/// <summary>
/// Turns what ssh printed on stderr when it failed (exit code 255, LC_ALL=C) into an error that names the cause and
/// the fix. Texts are OpenSSH's own (measured with OpenSSH 9.2).
/// </summary>
internal static partial class SshErrors
{
    /// <summary>ssh's exit code for its own failures; any other code is the remote command's.</summary>
    public const int SshFailureExitCode = 255;

    /// <param name="stderr">ssh's stderr.</param>
    /// <param name="target">The destination as the user wrote it ("root@server"), named in the message.</param>
    public static BackupException Classify(string stderr, string target)
    {
        var words = SshWords(stderr);
        bool Has(string text) => stderr.Contains(text, StringComparison.OrdinalIgnoreCase);

        if (Has("REMOTE HOST IDENTIFICATION HAS CHANGED") || ChangedKeyRegex().IsMatch(stderr))
            return HostKeyChanged(stderr, target);
        if (Has("host key is known for") || Has("Host key verification failed"))
            return HostKeyUnknown(stderr, target);
        if (Has("Permission denied (") || Has("Too many authentication failures") || Has("No more authentication methods"))
        {
            return new BackupException(ErrorIds.SshAuthenticationFailed, BackupErrorCategory.PermissionDenied,
                $"The SSH server '{target}' refused the login ({words}).",
                "The module logs in with a key only and never asks for a password. Install this machine's public key on the server " +
                $"('ssh-copy-id {target}'), or point IdentityFile in ~/.ssh/config at the right key, or load it into ssh-agent " +
                $"('ssh-add'); then check with 'ssh -o BatchMode=yes {target} true'.", target);
        }
        if (Has("Could not resolve hostname") || Has("Connection refused") || Has("No route to host")
            || Has("Network is unreachable") || Has("timed out") || Has("kex_exchange_identification")
            || Has("Name or service not known"))
        {
            return new BackupException(ErrorIds.SshHostUnreachable, BackupErrorCategory.ConnectionError,
                $"Cannot reach the SSH server '{target}': {words}.",
                "Check the host name (or the HostName and Port of its Host block in ~/.ssh/config), that sshd runs on the server, " +
                $"and that no firewall is in the way; test with 'ssh -o BatchMode=yes {target} true'.", target);
        }
        if (Has("Broken pipe") || Has("Connection reset") || Has("Connection closed by") || Has("closed by remote host")
            || Has("not responding") || Has("client_loop:") || Has("packet_write_wait") || Has("Connection to "))
            return ConnectionLost(target, words);
        if (Has("subsystem request failed"))
        {
            return new BackupException(ErrorIds.SshFailed, BackupErrorCategory.ConnectionError,
                $"The SSH server '{target}' offers no SFTP service ({words}).",
                "Enable it in the server's /etc/ssh/sshd_config ('Subsystem sftp internal-sftp' or the sftp-server path) and reload sshd.", target);
        }
        return new BackupException(ErrorIds.SshFailed, BackupErrorCategory.ConnectionError,
            $"ssh to '{target}' failed: {(words.Length > 0 ? words : "it printed nothing (is LogLevel QUIET set in ~/.ssh/config?)")}.",
            $"Run 'ssh -o BatchMode=yes {target} true' to see the problem.", target);
    }

    /// <summary>The connection broke after it had worked (the server died, the network went away, a dead link timed out).</summary>
    public static BackupException ConnectionLost(string target, string why, Exception? inner = null) =>
        new(ErrorIds.SshConnectionLost, BackupErrorCategory.ConnectionError,
            $"The SSH connection to '{target}' was lost: {why.TrimEnd('.')}.",
            "Check the network and the server (is sshd running, is its disk healthy?), then run the backup again.", target, inner);

    /// <summary>The connection still stands (ssh's keep-alives are answered) but nothing moves through it: the
    /// server's SFTP service, or the storage behind it, is stuck. Treated as a lost connection: made again, then
    /// given up. <paramref name="what"/> says what stood still for <paramref name="limit"/> ("the server answered none
    /// of its SFTP requests"), <paramref name="variable"/> which environment variable sets that limit.</summary>
    public static BackupException Stalled(string target, string what, TimeSpan limit, string variable) =>
        new(ErrorIds.SshConnectionLost, BackupErrorCategory.ConnectionError,
            $"The SSH connection to '{target}' was lost: {what} for {SftpLimits.Describe(limit)}; its SFTP service, or the storage behind it (an NFS mount?), is stuck.",
            $"Check the server: does its storage answer ('ls' of the destination folder there)? Then back up again. For a server that is only slow, raise the limit: $env:{variable} = 300.",
            target);

    private static BackupException HostKeyUnknown(string stderr, string target)
    {
        // "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking."
        var match = UnknownKeyRegex().Match(stderr);
        var (host, port) = match.Success ? SplitKnownHostsName(match.Groups["host"].Value) : (target[(target.LastIndexOf('@') + 1)..], null);
        var keyscan = port is null ? $"ssh-keyscan {host}" : $"ssh-keyscan -p {port} {host}";
        return new BackupException(ErrorIds.SshHostKeyUnknown, BackupErrorCategory.SecurityError,
            $"The host key of the SSH server '{target}' ({(match.Success ? match.Groups["host"].Value : host)}) is not in known_hosts " +
            "(ssh: " + SshWords(stderr) + "). The module only connects to servers whose key is known, and never adds a key itself.",
            $"Check the key and add it: on the server, 'ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub' shows its fingerprint; here, " +
            $"'{keyscan} | ssh-keygen -lf -' shows the fingerprint of what answers. When they are the same, append the ssh-keyscan " +
            $"line to ~/.ssh/known_hosts (or run 'ssh {target}' once, compare the fingerprint it shows, and answer yes).", target);
    }

    private static BackupException HostKeyChanged(string stderr, string target)
    {
        var fingerprint = FingerprintRegex().Match(stderr);
        var remove = RemoveCommandRegex().Match(stderr);
        var removeCommand = remove.Success ? remove.Value : "ssh-keygen -R <host>";
        return new BackupException(ErrorIds.SshHostKeyChanged, BackupErrorCategory.SecurityError,
            $"The host key of the SSH server '{target}' has CHANGED since it was recorded in known_hosts" +
            (fingerprint.Success ? $" (it now shows {fingerprint.Groups["fp"].Value})" : "") +
            ": the server was reinstalled or given a new key, or someone is intercepting the connection. Nothing was sent.",
            "Ask the server's administrator for its fingerprint ('ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub' on the server). " +
            $"Only if it is the new one, remove the old key with '{removeCommand}' and add the new one (ssh-keyscan, or 'ssh {target}' once). " +
            "The module never replaces a key itself.", target);
    }

    /// <summary>"[127.0.0.1]:2222" -> (127.0.0.1, 2222); "server" -> (server, null).</summary>
    private static (string Host, string? Port) SplitKnownHostsName(string name)
    {
        var bracketed = BracketedHostRegex().Match(name);
        return bracketed.Success ? (bracketed.Groups["host"].Value, bracketed.Groups["port"].Value) : (name, null);
    }

    /// <summary>ssh's message lines, joined; the warning banner's '@' lines and blank lines dropped.</summary>
    public static string SshWords(string stderr) =>
        string.Join("; ", stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(line => !line.StartsWith("@@@", StringComparison.Ordinal) && !line.StartsWith("@ ", StringComparison.Ordinal))
            .Select(line => line.StartsWith("ssh: ", StringComparison.Ordinal) ? line[5..] : line)
            .Select(line => line.TrimEnd('.')));

    [GeneratedRegex(@"host key is known for (?<host>\S+) and")]
    private static partial Regex UnknownKeyRegex();

    [GeneratedRegex(@"Host key for \S+ has changed")]
    private static partial Regex ChangedKeyRegex();

    [GeneratedRegex(@"(?<fp>SHA256:[A-Za-z0-9+/=]+)")]
    private static partial Regex FingerprintRegex();

    [GeneratedRegex(@"ssh-keygen -f ""[^""]+"" -R ""[^""]+""")]
    private static partial Regex RemoveCommandRegex();

    [GeneratedRegex(@"^\[(?<host>[^\]]+)\]:(?<port>\d+)$")]
    private static partial Regex BracketedHostRegex();
}

using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>
/// A private OpenSSH server on a free 127.0.0.1 port, run in the foreground (no systemd): its own host key, one
/// authorized client key, internal-sftp with umask 000 (so modes the store gets right are its own doing), and a client
/// config file (passed with -F, so nobody's ~/.ssh is read or written) with one Host alias per situation:
/// <c>good</c>, <c>unknown</c> (empty known_hosts and StrictHostKeyChecking no), <c>changed</c> (known_hosts holds
/// another key), <c>wrongkey</c> (a key the server does not accept) and <c>down</c> (a port nobody listens on).
/// If sshd cannot be installed or started, the constructor throws: the tests fail, they are never skipped.
/// </summary>
internal sealed class TestSshServer : IDisposable
{
    private const string Sshd = "/usr/sbin/sshd";
    private readonly TempFolder _folder = new("odakvm-sshd");
    private Process? _sshd;

    public TestSshServer()
    {
        EnsureOpenSshServer();
        Directory.CreateDirectory("/run/sshd"); // sshd's privilege separation folder
        Keygen("host_key");
        Keygen("other_host_key");
        Keygen("client_key");
        Keygen("wrong_client_key");
        File.Copy(Path("client_key.pub"), Path("authorized_keys"));
        Port = FreePort();
        DownPort = FreePort();
        File.WriteAllText(Path("known_hosts.good"), $"[127.0.0.1]:{Port} {PublicKey("host_key")}\n");
        File.WriteAllText(Path("known_hosts.changed"), $"[127.0.0.1]:{Port} {PublicKey("other_host_key")}\n");
        File.WriteAllText(Path("known_hosts.empty"), "");
        File.WriteAllText(Path("sshd_config"), $"""
            Port {Port}
            ListenAddress 127.0.0.1
            HostKey {Path("host_key")}
            PidFile {Path("sshd.pid")}
            AuthorizedKeysFile {Path("authorized_keys")}
            PermitRootLogin prohibit-password
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            UsePAM no
            StrictModes no
            MaxStartups 100
            MaxSessions 100
            Subsystem sftp internal-sftp -u 000

            """);
        File.WriteAllText(ClientConfig, $"""
            Host good
              UserKnownHostsFile {Path("known_hosts.good")}
              IdentityFile {Path("client_key")}
            Host unknown
              UserKnownHostsFile {Path("known_hosts.empty")}
              StrictHostKeyChecking no
              IdentityFile {Path("client_key")}
            Host changed
              UserKnownHostsFile {Path("known_hosts.changed")}
              IdentityFile {Path("client_key")}
            Host wrongkey
              UserKnownHostsFile {Path("known_hosts.good")}
              IdentityFile {Path("wrong_client_key")}
            Host down
              UserKnownHostsFile {Path("known_hosts.good")}
              IdentityFile {Path("client_key")}
              Port {DownPort}
            Host *
              HostName 127.0.0.1
              Port {Port}
              User root
              IdentitiesOnly yes
              GlobalKnownHostsFile /dev/null

            """);
        Start();
    }

    public int Port { get; }

    /// <summary>A port that was free when the server started: nothing listens there.</summary>
    public int DownPort { get; }

    public string ClientConfig => Path("ssh_config");

    /// <summary>A folder the tests write into (absolute, so it does not depend on root's home).</summary>
    public string DataFolder(string name) => Directory.CreateDirectory(Path("data", name)).FullName;

    public string Path(params string[] parts) => _folder.Combine(parts);

    public SshOptions Options { get; } = new()
    {
        ConnectTimeout = TimeSpan.FromSeconds(5),
        ServerAliveInterval = TimeSpan.FromSeconds(1),
        ServerAliveCountMax = 2,
    };

    /// <summary>A store on this server through one of the aliases; reconnections are quick.</summary>
    public SshBackupStore Store(string alias, string folder, SshReconnectPolicy? reconnect = null)
    {
        var runner = new CliWrapProcessRunner(NullSink.Instance);
        var ssh = new SshClient(new SshDestination(null, alias, folder), runner, runner, Options with { ConfigFile = ClientConfig });
        return new SshBackupStore(ssh, reconnect ?? QuickReconnect);
    }

    public static SshReconnectPolicy QuickReconnect { get; } = new([
        TimeSpan.FromMilliseconds(100), TimeSpan.FromMilliseconds(200), TimeSpan.FromMilliseconds(300),
        TimeSpan.FromMilliseconds(400), TimeSpan.FromMilliseconds(500)]);

    /// <summary>Kills the server-side processes of every open connection (the children of the listening sshd),
    /// as a crash or a reset link would; the server keeps listening.</summary>
    public int KillConnections()
    {
        var sessions = ChildrenOf(_sshd!.Id);
        foreach (var session in sessions)
        {
            try
            {
                using var process = Process.GetProcessById(session);
                process.Kill(entireProcessTree: true);
                process.WaitForExit();
            }
            catch (ArgumentException)
            {
                // Ended by itself meanwhile.
            }
        }
        return sessions.Count;
    }

    /// <summary>Freezes the server-side processes of every open connection (SIGSTOP): a link gone dead without a
    /// reset, which only ssh's keep-alives notice.</summary>
    public IReadOnlyList<int> FreezeConnections()
    {
        var sessions = ChildrenOf(_sshd!.Id);
        foreach (var session in sessions)
            _ = Kill(session, 19);
        return sessions;
    }

    /// <summary>Stops the server and every connection: nothing listens on its port any more.</summary>
    public void Stop()
    {
        if (_sshd is null)
            return;
        KillConnections();
        _sshd.Kill(entireProcessTree: true);
        _sshd.WaitForExit();
        _sshd.Dispose();
        _sshd = null;
    }

    public string Log => File.Exists(Path("sshd.log")) ? File.ReadAllText(Path("sshd.log")) : "";

    public void Dispose()
    {
        Stop();
        _folder.Dispose();
    }

    private void Start()
    {
        var start = new ProcessStartInfo(Sshd, ["-D", "-f", Path("sshd_config"), "-E", Path("sshd.log")]) { UseShellExecute = false };
        _sshd = Process.Start(start) ?? throw new InvalidOperationException("sshd did not start.");
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (DateTime.UtcNow < deadline)
        {
            if (_sshd.HasExited)
                throw new InvalidOperationException($"sshd exited with code {_sshd.ExitCode} at start. Its log:\n{Log}");
            try
            {
                using var probe = new TcpClient();
                probe.Connect(IPAddress.Loopback, Port);
                return;
            }
            catch (SocketException)
            {
                Thread.Sleep(20);
            }
        }
        throw new InvalidOperationException($"sshd did not listen on 127.0.0.1:{Port} within 10 s. Its log:\n{Log}");
    }

    private static void EnsureOpenSshServer()
    {
        if (File.Exists(Sshd))
            return;
        // As the notes on ssh say: Debian's openssh-server, without recommends; no service is started (no systemd).
        // A machine whose package lists were never fetched needs an update first.
        string[] install = ["install", "-y", "--no-install-recommends", "openssh-server"];
        var (code, output) = Run("apt-get", install, ("DEBIAN_FRONTEND", "noninteractive"));
        if (code != 0)
        {
            Run("apt-get", ["update", "-qq"], ("DEBIAN_FRONTEND", "noninteractive"));
            (code, output) = Run("apt-get", install, ("DEBIAN_FRONTEND", "noninteractive"));
        }
        if (code != 0 || !File.Exists(Sshd))
            throw new InvalidOperationException($"These tests need {Sshd}: 'apt-get install openssh-server' failed ({code}):\n{output}");
    }

    private void Keygen(string name)
    {
        var (code, output) = Run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", Path(name)]);
        if (code != 0)
            throw new InvalidOperationException($"ssh-keygen failed ({code}): {output}");
    }

    /// <summary>"ssh-ed25519 AAAA..." without the comment.</summary>
    private string PublicKey(string name) => string.Join(' ', File.ReadAllText(Path(name + ".pub")).Split(' ')[..2]);

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private static List<int> ChildrenOf(int parent)
    {
        var children = new List<int>();
        foreach (var folder in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(System.IO.Path.GetFileName(folder), out var pid))
                continue;
            try
            {
                // /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, so read after the last ')'.
                var stat = File.ReadAllText(System.IO.Path.Combine(folder, "stat"));
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                if (int.Parse(fields[1]) == parent)
                    children.Add(pid);
            }
            catch (IOException)
            {
                // The process ended while being looked at.
            }
        }
        return children;
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);

    internal static (int Code, string Output) Run(string program, string[] arguments, params (string Name, string Value)[] environment)
    {
        var start = new ProcessStartInfo(program, arguments) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var (name, value) in environment)
            start.Environment[name] = value;
        using var process = Process.Start(start)!;
        var error = process.StandardError.ReadToEndAsync();
        var output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, output + error.Result);
    }
}

[CollectionDefinition(Name)]
public sealed class SshServerCollection : ICollectionFixture<SshServerFixture>
{
    public const string Name = "sshd on loopback";
}

/// <summary>One server shared by the tests that do not stop or break it.</summary>
public sealed class SshServerFixture : IDisposable
{
    internal TestSshServer Server { get; } = new();

    public void Dispose() => Server.Dispose();
}

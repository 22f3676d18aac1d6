using System.Globalization;
using System.Text;

namespace OdaKvmBackup.Core.Stores.Ssh;

/// <summary>How ssh is run. The defaults are the product's; tests give their own client config file.</summary>
internal sealed record SshOptions
{
    public string Program { get; init; } = "ssh";

    /// <summary>A client config file passed with -F instead of ~/.ssh/config: for tests only.</summary>
    public string? ConfigFile { get; init; }

    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>A keep-alive every interval; after <see cref="ServerAliveCountMax"/> unanswered ones ssh gives up,
    /// so a dead link is noticed in about a minute instead of hanging a backup.</summary>
    public TimeSpan ServerAliveInterval { get; init; } = TimeSpan.FromSeconds(15);

    public int ServerAliveCountMax { get; init; } = 4;
}

/// <summary>
/// Builds ssh command lines (argument arrays, never a shell string) and runs them through the process runner. Host
/// keys are always checked and never added; ssh never prompts (a cron run fails instead of hanging). Everything
/// else (Host aliases, Port, User, IdentityFile, ProxyJump, ssh-agent) comes from the user's ~/.ssh/config.
/// </summary>
internal sealed class SshClient
{
    private readonly IProcessRunner _runner;
    private readonly IDuplexProcessRunner _duplexRunner;

    public SshClient(SshDestination destination, IProcessRunner runner, IDuplexProcessRunner duplexRunner, SshOptions? options = null)
    {
        Destination = destination;
        _runner = runner;
        _duplexRunner = duplexRunner;
        Options = options ?? new SshOptions();
    }

    public SshDestination Destination { get; }

    public SshOptions Options { get; }

    /// <summary>The server as messages name it: "root@server" or "server".</summary>
    public string Target => Destination.SshTarget;

    /// <summary>The options every ssh call gets, before the destination.</summary>
    public IReadOnlyList<string> CommonArguments()
    {
        var args = new List<string>();
        if (Options.ConfigFile is not null)
            args.AddRange(["-F", Options.ConfigFile]);
        args.AddRange([
            // -o on the command line wins over any config file, so these hold whatever ~/.ssh/config says.
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "UpdateHostKeys=no",
            "-o", "ConnectTimeout=" + Seconds(Options.ConnectTimeout),
            "-o", "ServerAliveInterval=" + Seconds(Options.ServerAliveInterval),
            "-o", "ServerAliveCountMax=" + Options.ServerAliveCountMax.ToString(CultureInfo.InvariantCulture),
            // What scp and sftp add for a data channel: no terminal (it would garble binary data), no forwarding,
            // no RemoteCommand or LocalCommand from the config, and never a lingering ControlPersist master.
            "-x",
            "-o", "ForwardAgent=no",
            "-o", "ClearAllForwardings=yes",
            "-o", "PermitLocalCommand=no",
            "-o", "RemoteCommand=none",
            "-o", "RequestTTY=no",
            "-o", "ControlMaster=no",
        ]);
        return args;
    }

    /// <summary>ssh's arguments to start a subsystem ("sftp") on the server.</summary>
    public IReadOnlyList<string> SubsystemArguments(string subsystem) =>
        [.. CommonArguments(), "-s", "--", Destination.SshTarget, subsystem];

    /// <summary>ssh's arguments to run <paramref name="script"/> with POSIX sh on the server, with
    /// <paramref name="arguments"/> as its $1, $2...</summary>
    public IReadOnlyList<string> ScriptArguments(string script, IReadOnlyList<string> arguments) =>
        [.. CommonArguments(), "--", Destination.SshTarget, RemoteCommandLine(script, arguments)];

    /// <summary>
    /// The command line the server's login shell runs: <c>sh -c '&lt;script&gt;' sh 'arg1' 'arg2'</c>. ssh sends the
    /// remote command as one string that the login shell parses, so every word is single-quoted for it; then sh
    /// receives the script and the arguments exactly as given, whatever they hold. (The login shell must be a POSIX
    /// one: bash, dash, ksh or zsh; csh does not take a newline inside quotes.)
    /// </summary>
    public static string RemoteCommandLine(string script, IReadOnlyList<string> arguments)
    {
        var line = new StringBuilder("sh -c ").Append(QuoteForShell(script)).Append(" sh");
        foreach (var argument in arguments)
            line.Append(' ').Append(QuoteForShell(argument));
        return line.ToString();
    }

    /// <summary>'text' for a POSIX shell: inside single quotes nothing is special, and a quote is written '\''.</summary>
    public static string QuoteForShell(string text) => "'" + text.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    /// <summary>Runs a script on the server. Throws the classified error when ssh itself fails (exit code 255);
    /// any other exit code is the script's, for the caller to judge.</summary>
    public async Task<ProcessResult> RunScriptAsync(string script, IReadOnlyList<string> arguments, CancellationToken ct, TimeSpan? timeout = null)
    {
        ProcessResult result;
        try
        {
            result = await _runner.RunAsync(Options.Program, ScriptArguments(script, arguments), cancellationToken: ct, timeout: timeout).ConfigureAwait(false);
        }
        catch (BackupException ex) when (ex.ErrorId == ErrorIds.ToolNotFound)
        {
            throw new BackupException(ex.ErrorId, ex.Category, ex.Message, "Install the SSH client (on Oracle Linux: the openssh-clients package).", ex.Target, ex);
        }
        if (result.ExitCode == SshErrors.SshFailureExitCode)
            throw SshErrors.Classify(result.StandardError, Target);
        return result;
    }

    /// <summary>Starts a subsystem on the server; the caller speaks its protocol over stdin and stdout. Whether the
    /// connection worked shows when the caller reads: ssh closes stdout and exits 255 if it did not.</summary>
    public Task<IDuplexProcess> StartSubsystemAsync(string subsystem, CancellationToken ct) =>
        _duplexRunner.StartDuplexAsync(Options.Program, SubsystemArguments(subsystem), ct);

    private static string Seconds(TimeSpan span) => Math.Max(1, (int)Math.Ceiling(span.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
}

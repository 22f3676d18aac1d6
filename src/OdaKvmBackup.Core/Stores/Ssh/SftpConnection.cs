namespace OdaKvmBackup.Core.Stores.Ssh;

/// <summary>How often, and after how long, a lost SSH connection is made again before giving up.</summary>
internal sealed record SshReconnectPolicy(IReadOnlyList<TimeSpan> Delays)
{
    public const string EnvironmentVariable = "ODAKVMBACKUP_SSH_RECONNECT_SEC";

    /// <summary>5 attempts over about a minute: long enough for a switch to reboot or a link to flap, short
    /// enough that a server that is gone fails the run soon. $env:ODAKVMBACKUP_SSH_RECONNECT_SEC sets other
    /// delays, in seconds, comma-separated ("5,10,30,60,120" for a flaky WAN link).</summary>
    public static SshReconnectPolicy Default =>
        Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } text && Parse(text) is { } custom ? custom : Standard;

    private static readonly SshReconnectPolicy Standard = new([
        TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(4), TimeSpan.FromSeconds(8), TimeSpan.FromSeconds(16), TimeSpan.FromSeconds(30)]);

    private static SshReconnectPolicy? Parse(string text)
    {
        var delays = new List<TimeSpan>();
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (!double.TryParse(part, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var seconds) || seconds < 0)
                return null;
            delays.Add(TimeSpan.FromSeconds(seconds));
        }
        return delays.Count > 0 ? new SshReconnectPolicy(delays) : null;
    }

    public TimeSpan Total => Delays.Aggregate(TimeSpan.Zero, (sum, delay) => sum + delay);
}

/// <summary>
/// One SFTP session to a server that is made again when it breaks. Only a connection lost after it worked is
/// retried (with the policy's delays, also while the server is unreachable); a refused host key or login fails at once.
/// </summary>
internal sealed class SftpConnection : IAsyncDisposable
{
    private readonly SemaphoreSlim _lock = new(1, 1);
    private SftpClient? _session;

    public SftpConnection(SshClient ssh, SshReconnectPolicy policy)
    {
        Ssh = ssh;
        Policy = policy;
    }

    public SshClient Ssh { get; }

    public SshReconnectPolicy Policy { get; }

    /// <summary>The working session, connecting when there is none (a first connection's failure is thrown as is).</summary>
    public async Task<SftpClient> GetAsync(CancellationToken ct)
    {
        await _lock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (_session is { Failure: null })
                return _session;
            await DropSessionAsync().ConfigureAwait(false);
            _session = await SftpClient.ConnectAsync(Ssh, ct).ConfigureAwait(false);
            return _session;
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>
    /// A new session after <paramref name="failed"/> lost its connection (or the one another caller already made),
    /// waiting the policy's next delay before each attempt. Throws SshConnectionLost naming the server once
    /// <paramref name="attempts"/> has used them all.
    /// </summary>
    public async Task<SftpClient> ReconnectAsync(SftpClient failed, BackupException lost, ReconnectAttempts attempts, CancellationToken ct)
    {
        var lastError = lost;
        while (attempts.Used < Policy.Delays.Count)
        {
            await Task.Delay(Policy.Delays[attempts.Used++], ct).ConfigureAwait(false);
            await _lock.WaitAsync(ct).ConfigureAwait(false);
            try
            {
                if (_session is { Failure: null } && _session != failed)
                    return _session;
                await DropSessionAsync().ConfigureAwait(false);
                _session = await SftpClient.ConnectAsync(Ssh, ct).ConfigureAwait(false);
                return _session;
            }
            catch (BackupException ex) when (IsConnectionProblem(ex))
            {
                lastError = ex;
            }
            finally
            {
                _lock.Release();
            }
        }
        // Why it was lost first, then why it could not be made again: the first is what the user must look at.
        var again = $"{attempts.Used} attempts to connect again over {Policy.Total.TotalSeconds:0.#} s failed";
        throw SshErrors.ConnectionLost(Ssh.Target, lastError == lost
            ? $"{Cause(lost)}; {again}"
            : $"{Cause(lost)}; {again} (last: {Cause(lastError)})", lastError);
    }

    /// <summary>What an error says after "The SSH connection to '...' was lost: ".</summary>
    private string Cause(BackupException error)
    {
        var prefix = $"The SSH connection to '{Ssh.Target}' was lost: ";
        var message = error.Message.StartsWith(prefix, StringComparison.Ordinal) ? error.Message[prefix.Length..] : error.Message;
        return message.TrimEnd('.');
    }

    /// <summary>Connects now if there is no working session (a spare connection made while the server is busy with
    /// something else); a failure is left for the first real use to meet and report.</summary>
    public async Task WarmAsync(CancellationToken ct)
    {
        try
        {
            await GetAsync(ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is BackupException or OperationCanceledException or IOException)
        {
        }
    }

    /// <summary>True for the failures a new connection may cure: lost, or (while reconnecting) unreachable.</summary>
    public static bool IsConnectionProblem(BackupException ex) =>
        ex.ErrorId is ErrorIds.SshConnectionLost or ErrorIds.SshHostUnreachable;

    public async ValueTask DisposeAsync()
    {
        await _lock.WaitAsync().ConfigureAwait(false);
        try
        {
            await DropSessionAsync().ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }

    private async Task DropSessionAsync()
    {
        if (_session is not null)
            await _session.DisposeAsync().ConfigureAwait(false);
        _session = null;
    }
}

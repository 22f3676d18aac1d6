using System.Globalization;

namespace OdaKvmBackup.Core.Stores.Ssh;

/// <summary>
/// What an SFTP server may take from a backup: the time it may leave a request unanswered, the time a copy's data
/// may stand still, and the sizes it may ask for. A server's sshd can go on answering keep-alives while its
/// sftp-server waits for ever on a hung NFS mount: without these bounds a VM would stay on its overlay for good.
/// Each stall becomes a lost connection, which is made again (<see cref="SshReconnectPolicy"/>) and then given up.
/// </summary>
internal static class SftpLimits
{
    public const string RequestTimeoutVariable = "ODAKVMBACKUP_SFTP_TIMEOUT_SEC";
    public const string StallVariable = "ODAKVMBACKUP_SFTP_STALL_SEC";

    /// <summary>
    /// How long requests may wait while the server answers none of them: 60 s, or
    /// $env:ODAKVMBACKUP_SFTP_TIMEOUT_SEC. Counted from when a request was sent, or from the server's last answer
    /// if that came later, so a slow link whose answers keep coming never trips it, however many requests wait.
    /// </summary>
    public static TimeSpan RequestTimeout => Seconds(RequestTimeoutVariable, 60);

    /// <summary>fsync@openssh.com waits for the server's disk to take all of a file's data (gigabytes may still be
    /// in its page cache): 10 times the request limit.</summary>
    public const int FlushTimeoutFactor = 10;

    /// <summary>How long a copy to or from a server may wait for its next acknowledged write or answered read:
    /// 60 s, or $env:ODAKVMBACKUP_SFTP_STALL_SEC.</summary>
    public static TimeSpan StallLimit => Seconds(StallVariable, 60);

    /// <summary>The fewest bytes per READ or WRITE: what every SFTP server takes (the draft's 32 KiB).</summary>
    public const int MinChunkLength = 32 * 1024;

    /// <summary>The most bytes per READ or WRITE, whatever limits@openssh.com says: OpenSSH's own 256 KiB. A
    /// writer's 64 requests in flight then hold at most 16 MiB, a reader's 16 at most 4 MiB.</summary>
    public const int MaxChunkLength = 256 * 1024;

    /// <summary>A length a server announced, clamped to [<see cref="MinChunkLength"/>, <see cref="MaxChunkLength"/>];
    /// 0 ("no limit") is the minimum.</summary>
    public static int ClampChunkLength(ulong announced) =>
        announced == 0 ? MinChunkLength : (int)Math.Clamp(announced, (ulong)MinChunkLength, (ulong)MaxChunkLength);

    /// <summary>The most entries one folder listing may hold (a destination holds a folder per VM, a VM's folder one
    /// per set): a server that lists without end is an error, not a listing that never ends.</summary>
    public const int MaxDirectoryEntries = 100_000;

    /// <summary>"3 s", "0.5 s": a limit as messages say it.</summary>
    public static string Describe(TimeSpan limit) => limit.TotalSeconds.ToString("0.###", CultureInfo.InvariantCulture) + " s";

    private static TimeSpan Seconds(string variable, double standard) =>
        double.TryParse(Environment.GetEnvironmentVariable(variable), NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds) && seconds > 0
            ? TimeSpan.FromSeconds(seconds)
            : TimeSpan.FromSeconds(standard);
}

using System.Text;
using CliWrap;

namespace OdaKvmBackup.Core.Host;

/// <summary>A long-lived process spoken to through its stdin and stdout (a protocol such as SFTP); what it writes
/// on stderr is collected for the error message.</summary>
internal interface IDuplexProcess : IAsyncDisposable
{
    /// <summary>The process's stdin.</summary>
    Stream Input { get; }

    /// <summary>The process's stdout; a read returns 0 once the process has closed it (usually: it exited).</summary>
    Stream Output { get; }

    /// <summary>What the process wrote on stderr so far.</summary>
    string StandardError { get; }

    /// <summary>Closes stdin and waits for the process to end. Call it once the caller no longer reads
    /// <see cref="Output"/>: the output stream is closed when this returns. Returns the exit code.</summary>
    Task<int> WaitForExitAsync(CancellationToken ct);
}

/// <summary>Starts long-lived two-way processes. Cancelling the token given at start kills the process, and so
/// does disposing it.</summary>
internal interface IDuplexProcessRunner
{
    Task<IDuplexProcess> StartDuplexAsync(string program, IReadOnlyList<string> arguments, CancellationToken ct);
}

using System.Text.Json;
using OdaKvmBackup.Core.Processes;

namespace OdaKvmBackup.Core.QemuImg;

/// <summary>What `qemu-img info --output=json` says of one image.</summary>
public sealed record ImageInfo(string Format, long VirtualSize, long ActualSize, string? BackingFile, string? BackingFormat);

/// <summary>qemu-img, for what virsh cannot do: reading image headers and committing a shut-off domain's overlay.</summary>
public sealed class QemuImgClient
{
    private const string Program = "qemu-img";
    private readonly IProcessRunner _runner;

    public QemuImgClient(IProcessRunner runner) => _runner = runner;

    /// <summary>-U: the image may be open by a running QEMU; we only read its header.</summary>
    public async Task<ImageInfo> InfoAsync(string path, CancellationToken ct)
    {
        var result = await RunAsync(["info", "--output=json", "-U", path], ct).ConfigureAwait(false);
        return ParseInfo(result.StandardOutput);
    }

    /// <summary>Writes an overlay's data into its backing file (offline: the domain must be shut off).</summary>
    public async Task CommitAsync(string overlay, CancellationToken ct) =>
        await RunAsync(["commit", overlay], ct, ToolTimeouts.LongWork).ConfigureAwait(false);

    /// <summary>Creates a qcow2 overlay on top of <paramref name="backingFile"/>: the backing file is only read,
    /// never opened for writing, and everything written to the overlay stays in the overlay.</summary>
    public async Task CreateOverlayAsync(string overlay, string backingFile, string backingFormat, CancellationToken ct) =>
        await RunAsync(["create", "-q", "-f", "qcow2", "-b", backingFile, "-F", backingFormat, overlay], ct).ConfigureAwait(false);

    /// <summary>`qemu-img check` (read-only: without -r it never writes): null when the image has no errors, else
    /// what qemu-img said. Leaked clusters only waste space and are not an error here.</summary>
    public async Task<string?> CheckAsync(string path, string format, CancellationToken ct)
    {
        var result = await _runner.RunAsync(Program, ["check", "-U", "-f", format, path], null, ct, null).ConfigureAwait(false);
        return result.ExitCode switch
        {
            0 or 3 => null,
            2 => "qemu-img check found corruptions: " + Summary(result),
            _ => $"qemu-img check could not check it (exit code {result.ExitCode}): " + Summary(result),
        };
    }

    private static string Summary(ProcessResult result) =>
        string.Join(" ", (result.StandardOutput + "\n" + result.StandardError).Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Take(6));

    public static ImageInfo ParseInfo(string json)
    {
        try
        {
            using var doc = JsonDocument.Parse(json);
            var root = doc.RootElement;
            string? Text(string name) => root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
            long Number(string name) => root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt64() : 0;
            return new ImageInfo(Text("format") ?? "", Number("virtual-size"), Number("actual-size"),
                Text("full-backing-filename") ?? Text("backing-filename"), Text("backing-filename-format"));
        }
        catch (JsonException ex)
        {
            throw new BackupException(ErrorIds.UnparsableOutput, BackupErrorCategory.ParserError,
                $"qemu-img info returned output that is not JSON: {ex.Message}", null, null, ex);
        }
    }

    private async Task<ProcessResult> RunAsync(string[] args, CancellationToken ct, TimeSpan? timeout = null)
    {
        var result = await _runner.RunAsync(Program, args, null, ct, timeout).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            throw new BackupException(ErrorIds.QemuImgFailed, BackupErrorCategory.InvalidResult,
                $"qemu-img {args[0]} failed with exit code {result.ExitCode}: {result.StandardError.Trim()}",
                null, args[^1]);
        }
        return result;
    }
}

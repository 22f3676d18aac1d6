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

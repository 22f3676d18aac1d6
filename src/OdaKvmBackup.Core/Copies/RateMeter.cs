namespace OdaKvmBackup.Core.Copies;

/// <summary>Progress text for a copy: bytes, rate, time left.</summary>
internal sealed class RateMeter
{
    private readonly DateTime _started = DateTime.UtcNow;

    public string Describe(long done, long total)
    {
        var seconds = (DateTime.UtcNow - _started).TotalSeconds;
        var rate = seconds > 0.2 ? done / seconds : 0;
        var left = rate > 0 ? TimeSpan.FromSeconds((total - done) / rate) : (TimeSpan?)null;
        return $"{FileSystemPaths.FormatBytes(done)} of {FileSystemPaths.FormatBytes(total)}"
            + (rate > 0 ? $", {FileSystemPaths.FormatBytes((long)rate)}/s" : "")
            + (left is { } l ? $", {l:hh\\:mm\\:ss} left" : "");
    }
}
